"""gahb: generalization in diffusion models through geometry-adaptive harmonic bases.

Reproduces and extends Kadkhodaie, Guth, Simoncelli & Mallat, "Generalization in diffusion
models arises from geometry-adaptive harmonic representations" (ICLR 2024).

Sub-packages map to the paper's parts: ``data`` (datasets, deduplication, disjoint subsets),
``models`` (bias-free UNet and BF-CNN), ``training``, ``sampling`` (Algorithm 1 and linear
inverse problems), ``analysis`` (Jacobians, memorization metrics), ``studies`` and ``report``.
"""

__version__ = "0.1.0"
