"""Training blind bias-free denoisers (paper App. A.1; spec section 4)."""
