"""Disks: a 5-dimensional manifold of images and its tangent space (paper section 4, Fig. 5).

A disk is (cx, cy, r, fg, bg): centre, radius, foreground and background intensities. The
renderer is differentiable in all five, so the tangent space of the manifold at a disk is defined
everywhere and :func:`disk_tangent_space` computes it in closed form (or by autograd or finite
differences, as checks).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .seeding import BLOCK, Size, _block_rngs, _check_n, _hw, _progress, _torch_threads, _uniform

DISK_PARAM_NAMES = ("cx", "cy", "r", "fg", "bg")


def _edge_profile(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Coverage phi(t) and phi'(t) of a pixel at signed distance t = r - rho inside the edge.

    A cubic smoothstep over one pixel, t in [-1/2, 1/2]: phi = u^2 (3 - 2u), u = t + 1/2. It is
    C^1 (so the image is differentiable in the parameters and the tangent space is defined
    everywhere) and odd-symmetric about t = 0 (phi(t) + phi(-t) = 1), so the rendered area
    equals pi r^2 up to O(1/r) curvature and lattice terms.
    """
    u = (t + 0.5).clamp(0.0, 1.0)
    return u * u * (3 - 2 * u), 6 * u * (1 - u)


def _as_params(params, dtype: torch.dtype) -> torch.Tensor:
    p = torch.as_tensor(params, dtype=dtype)
    if p.ndim == 1:
        p = p.unsqueeze(0)
    if p.ndim != 2 or p.shape[1] != 5:
        raise ValueError(f"disk parameters must have shape (N, 5) = (cx, cy, r, fg, bg), got "
                         f"{tuple(p.shape)}")
    if not torch.isfinite(p).all():
        raise ValueError("disk parameters must be finite")
    if (p[:, 2] <= 0).any():
        raise ValueError("disk radii must be positive")
    return p


def _pixel_grid(h: int, w: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    # Pixel (i, j) covers [j, j+1] x [i, i+1] of the continuous domain [0, W] x [0, H].
    y = torch.arange(h, dtype=dtype)[:, None] + 0.5
    x = torch.arange(w, dtype=dtype)[None, :] + 0.5
    return x, y


def _disk_pixels(cx, cy, r, fg, bg, x, y, derivs: bool = False):
    """Disk image values at points (x, y); every argument broadcasts elementwise."""
    dx, dy = x - cx, y - cy
    # The 1e-12 keeps d rho / d c finite at rho = 0 (autograd would give 0 * inf = nan there).
    rho = torch.sqrt(dx * dx + dy * dy + 1e-12)
    phi, dphi = _edge_profile(r - rho)
    img = bg + (fg - bg) * phi
    if not derivs:
        return img
    contrast = (fg - bg) * dphi
    # d phi(r - rho) / d cx = phi' * dx / rho, since d rho / d cx = -dx / rho.
    d = torch.stack(torch.broadcast_tensors(contrast * dx / rho, contrast * dy / rho, contrast,
                                            phi, 1 - phi), dim=-1)
    return img, d


def _render_disks(p: torch.Tensor, h: int, w: int, derivs: bool = False):
    x, y = _pixel_grid(h, w, p.dtype)
    return _disk_pixels(*(p[:, i, None, None] for i in range(5)), x, y, derivs=derivs)


def _autograd_disk_jacobian(p: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(H W, 5) Jacobian by one reverse-mode pass: each pixel gets its own leaf copy of the
    parameters, so the gradient of the pixel sum w.r.t. copy k is the k-th Jacobian row."""
    x, y = _pixel_grid(h, w, p.dtype)
    copies = p.reshape(1, 5).repeat(h * w, 1).requires_grad_(True)
    xs, ys = x.expand(h, w).reshape(-1), y.expand(h, w).reshape(-1)
    vals = _disk_pixels(*copies.unbind(1), xs, ys)
    (jac,) = torch.autograd.grad(vals.sum(), copies)
    return jac


def sample_disk_params(n: int, size: Size = 80, seed: int = 0, min_radius: float = 3.0) -> torch.Tensor:
    """Random disk parameters (n, 5) = (cx, cy, r, fg, bg), float64, ranges of the released
    ``circle_dataset`` (translate, scale, foreground, background, continuous):

    * r ~ U(min_radius, (min(H, W) - min_radius) // 2), i.e. U(3, 38) at 80x80;
    * cx ~ U(r, W - r), cy ~ U(r, H - r) in continuous pixel units (domain [0, W] x [0, H], pixel
      (i, j) centred at (j + 1/2, i + 1/2)), so the whole disk lies in the image;
    * fg, bg ~ U(0, 1) independently (the contrast fg - bg may be small or negative).
    """
    n, (h, w) = _check_n(n), _hw(size)
    r_max = (min(h, w) - min_radius) // 2
    if not 0 < min_radius < r_max:
        raise ValueError(f"need 0 < min_radius < (min(H, W) - min_radius) // 2; got min_radius="
                         f"{min_radius} for a {h}x{w} image")
    out = torch.empty(n, 5, dtype=torch.float64)
    for lo, hi, rng in _block_rngs(seed, n, salt=1):
        u = torch.from_numpy(_uniform(rng, hi - lo, (5,)))
        r = min_radius + (r_max - min_radius) * u[:, 2]
        out[lo:hi, 0] = r + (w - 2 * r) * u[:, 0]
        out[lo:hi, 1] = r + (h - 2 * r) * u[:, 1]
        out[lo:hi, 2] = r
        out[lo:hi, 3:] = u[:, 3:]
    return out


def disk_images(params, size: Size = 80, dtype: torch.dtype = torch.float32, chunk: int = BLOCK,
                progress: bool = False, threads: int | None = 1) -> torch.Tensor:
    """Render disks from parameters (N, 5) = (cx, cy, r, fg, bg) as (N, 1, H, W) images.

    image(x) = bg + (fg - bg) phi(r - |x - c|) with the one-pixel C^1 edge of
    :func:`_edge_profile` evaluated at pixel centres (anti-aliasing that is differentiable in
    all five parameters). Deterministic: the randomness is in :func:`sample_disk_params`.
    Values stay in [min(fg, bg), max(fg, bg)], so in [0, 1] for intensities in [0, 1].
    ``threads`` as in :func:`calpha_images`.
    """
    h, w = _hw(size)
    p = _as_params(params, torch.float64)
    out = torch.empty(p.shape[0], 1, h, w, dtype=dtype)
    with _torch_threads(threads), _progress(p.shape[0], progress, "disks") as bar:
        for lo in range(0, p.shape[0], chunk):
            work = p[lo:lo + chunk]
            if dtype != torch.float64:
                work = work.to(torch.float32)
            out[lo:lo + chunk, 0] = _render_disks(work, h, w).to(dtype)
            bar.update(work.shape[0])
    return out


class DiskTangent(NamedTuple):
    basis: torch.Tensor  # (d, 5) orthonormal columns spanning the tangent space (QR of derivatives)
    derivatives: torch.Tensor  # (d, 5) d image / d (cx, cy, r, fg, bg), flattened images


def disk_tangent_space(params, size: Size = 80, method: str = "analytic", step: float = 1e-4,
                       rank_tol: float = 1e-8) -> DiskTangent:
    """Tangent space of the disk manifold at one disk (paper Fig. 5).

    Args:
        params: (5,) = (cx, cy, r, fg, bg).
        size: image size.
        method: ``"analytic"`` (closed-form derivatives of :func:`disk_images`), ``"autograd"``
            (reverse-mode autodiff through the renderer, one pass) or ``"fd"`` (central finite differences with
            ``step``, in the parameters' own units: pixels and intensity).
        rank_tol: a derivative column whose QR residual is below ``rank_tol`` times its norm is
            (numerically) dependent on the previous ones; that happens when fg == bg, where the
            geometric directions vanish, and raises ValueError.

    Returns:
        :class:`DiskTangent` ``(basis, derivatives)``, both (d, 5) float64 with d = H * W; the
        basis is the Q of a QR (Gram-Schmidt order: cx, cy, r, fg, bg), signs fixed so that
        ``basis[:, k] . derivatives[:, k] > 0``.
    """
    h, w = _hw(size)
    p = _as_params(params, torch.float64)
    if p.shape[0] != 1:
        raise ValueError("disk_tangent_space takes the parameters of a single disk, shape (5,)")
    if method == "analytic":
        _, d = _render_disks(p, h, w, derivs=True)
        jac = d[0].reshape(h * w, 5)
    elif method == "autograd":
        jac = _autograd_disk_jacobian(p[0], h, w)
    elif method == "fd":
        cols = []
        for k in range(5):
            e = torch.zeros(5, dtype=torch.float64)
            e[k] = step
            plus = _render_disks(p + e, h, w)[0].reshape(-1)
            minus = _render_disks(p - e, h, w)[0].reshape(-1)
            cols.append((plus - minus) / (2 * step))
        jac = torch.stack(cols, dim=1)
    else:
        raise ValueError(f"method must be 'analytic', 'autograd' or 'fd', got {method!r}")
    q, rmat = torch.linalg.qr(jac)
    diag = rmat.diagonal()
    norms = jac.norm(dim=0)
    if (diag.abs() <= rank_tol * norms.clamp_min(1e-300)).any() or (norms == 0).any():
        raise ValueError("disk tangent space is degenerate (rank < 5), e.g. fg == bg or a disk "
                         f"outside the image: params={p[0].tolist()}")
    q = q * torch.sign(diag)[None, :]
    return DiskTangent(q, jac)
