"""The Jacobian of a blind denoiser at one noisy image, dense or matrix-free (paper section 3; spec 7.2).

A bias-free ReLU network in eval mode is piecewise linear and homogeneous, so at a fixed input y

    f(y) = J(y) y,          J(y) = df/dy  (d x d, d = C*H*W)                      (paper eq. 6)

and J(y) is the matrix of the linear network obtained by freezing every ReLU gate at the pattern
it takes on y. Everything in this module is built on one object, :class:`JacobianOperator`,
which applies J and J^T to batches of vectors without forming J:

* backend ``"linearized"`` (gahb's UNet and BF-CNN): a copy of the network with BF-BN folded into
  the convolutions and each ReLU replaced by multiplication with its recorded 0/1 gate. J V is a
  plain batched forward pass of that linear network under ``no_grad`` (cheaper than forward-mode
  AD); J^T U is one backward pass through a cached graph of it. Exact, not an approximation: the
  frozen network *is* J(y) (checked numerically against reverse-mode AD when it is built).
* backend ``"autograd"`` (any other differentiable per-sample denoiser, e.g. the closed-form
  :class:`~gahb.analysis.empirical.EmpiricalDenoiser` or a linear filter): batched forward-mode
  AD (``torch.func.jvp`` on a batch of copies of y) for J V, and a cached reverse graph on a batch
  of copies of y for J^T U.

On top of it: the dense Jacobian in bounded-memory chunks (:func:`jacobian`), the official
per-pixel reference loop (:func:`jacobian_loop`, for tests and benchmarks only), the top-k
eigenpairs of the symmetric part S = (J + J^T)/2 by a thick-restart Lanczos method with explicit
Rayleigh-Ritz residuals (:func:`topk_eigs`), and the trace tr J (the effective dimensionality of
paper eq. 7) exactly from the diagonal (:func:`trace_exact`) or by Hutchinson's estimator
(:func:`trace_hutchinson`).

Always evaluate Jacobians in eval mode: in train mode BF-BN divides by batch statistics and the
network is neither a per-sample function nor the one used for sampling (spec 10.4).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

BACKENDS = ("auto", "linearized", "autograd")

# Leaf modules whose eval-mode action is linear (or is a ReLU, which the linearized backend
# freezes). A network built only from these, with bias-free convolutions, has f(y) = J(y) y.
_LINEAR_LEAVES = (nn.Conv2d, nn.ConvTranspose2d, nn.AvgPool2d, nn.Identity)


def _as_image(y: torch.Tensor) -> torch.Tensor:
    """Accept (C, H, W) or (1, C, H, W); return a detached (1, C, H, W) tensor."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}")
    if y.ndim == 3:
        y = y.unsqueeze(0)
    if y.ndim != 4 or y.shape[0] != 1:
        raise ValueError(f"y must be one image of shape (C, H, W) or (1, C, H, W); got {tuple(y.shape)}")
    if not torch.isfinite(y).all():
        raise ValueError("y contains non-finite values")
    return y.detach()


def _model_dtype_device(model: nn.Module, y: torch.Tensor) -> tuple[torch.dtype, torch.device]:
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype, t.device
    return y.dtype, y.device


class _FrozenReLU(nn.Module):
    """Multiplication by a fixed 0/1 gate: a ReLU frozen at the activation pattern of one input."""

    def __init__(self, gate: torch.Tensor):
        super().__init__()
        self.gate = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate


def _is_linearizable(model: nn.Module) -> bool:
    from gahb.models import BFBatchNorm2d, ResidualDenoiser

    if not isinstance(model, ResidualDenoiser):
        return False
    for m in model.modules():
        if len(list(m.children())) > 0:
            continue
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.bias is not None:
            return False
        if not isinstance(m, _LINEAR_LEAVES + (nn.ReLU, BFBatchNorm2d)):
            return False
    return True


def linearize(model: nn.Module, y: torch.Tensor, channels_last: bool = False) -> nn.Module:
    """The frozen-activation linear network of a bias-free ReLU denoiser at ``y``: a module L with L(v) = J(y) v.

    The copy has BF-BN folded into the convolutions (:func:`gahb.models.fold_batchnorm`), frozen
    parameters, and every ReLU replaced by multiplication with the gate that ReLU takes when the
    original ``model`` runs on ``y``. Gates have batch size 1 and broadcast over any batch.
    """
    from gahb.models import optimize_for_inference

    if not _is_linearizable(model):
        raise ValueError(
            f"{type(model).__name__} is not a gahb bias-free ReLU network (conv/BF-BN/ReLU/pool only); "
            "use backend='autograd'"
        )
    # Gates come from the model's own forward pass, not from the folded copy: folding and memory
    # layout change float rounding, which can flip pre-activations lying within rounding of 0
    # and give a (slightly) different, equally valid linear piece than the one autograd sees.
    dtype, device = _model_dtype_device(model, y)
    y = _as_image(y).to(device=device, dtype=dtype)
    gates: dict[str, torch.Tensor] = {}

    def hook(name):
        def record(module, inputs, output):
            g = (output > 0).to(output.dtype)  # autograd's ReLU derivative convention: 0 at x <= 0
            gates[name] = g.contiguous(memory_format=torch.channels_last) if channels_last else g
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            model(y)
    finally:
        for h in handles:
            h.remove()
    lin = optimize_for_inference(model, channels_last=channels_last, fold=True)
    frozen = []
    for name, module in list(lin.named_modules()):
        if isinstance(module, nn.ReLU):
            parent_name, _, child = name.rpartition(".")
            parent = lin.get_submodule(parent_name) if parent_name else lin
            setattr(parent, child, _FrozenReLU(gates[name]))
            frozen.append(child)
    if len(frozen) != len(gates):  # pragma: no cover - a ReLU that did not run on y
        raise RuntimeError(f"recorded {len(gates)} ReLU gates but the copy has {len(frozen)} ReLUs")
    lin.gates = gates  # type: ignore[attr-defined]
    return lin


def _leaf_adjoint(m: nn.Module, u: torch.Tensor) -> torch.Tensor:
    """u -> A^T u for one linear leaf A of a frozen-activation network."""
    if isinstance(m, _FrozenReLU):
        return u * m.gate
    if isinstance(m, nn.Identity):
        return u
    if isinstance(m, nn.Conv2d):
        if (m.stride != (1, 1) or m.dilation != (1, 1) or m.groups != 1 or m.padding_mode != "zeros"
                or m.bias is not None or isinstance(m.padding, str)):
            raise _NoAdjoint(f"no explicit adjoint for {m}")
        # A stride-1 zero-padded convolution's adjoint is the convolution with the kernel flipped
        # and its channel axes swapped (padding k-1-p); as a forward conv it takes the fast path
        # that a conv backward (or conv_transpose2d) does not on CPU.
        wt = getattr(m, "_adjoint_weight", None)
        if wt is None or wt.dtype != m.weight.dtype:
            wt = m.weight.detach().transpose(0, 1).flip(-1, -2).contiguous()
            if m.weight.is_contiguous(memory_format=torch.channels_last) and not m.weight.is_contiguous():
                wt = wt.contiguous(memory_format=torch.channels_last)
            m._adjoint_weight = wt
        kh, kw = m.kernel_size
        return F.conv2d(u, wt, padding=(kh - 1 - m.padding[0], kw - 1 - m.padding[1]))
    if isinstance(m, nn.AvgPool2d):
        k, st = m.kernel_size, m.stride
        if not (k == st == 2 or k == st == (2, 2)) or m.padding not in (0, (0, 0)) or m.ceil_mode:
            raise _NoAdjoint(f"no explicit adjoint for {m}")
        return F.interpolate(u, scale_factor=2, mode="nearest") * 0.25
    if isinstance(m, nn.ConvTranspose2d):
        if (m.kernel_size != m.stride or m.padding != (0, 0) or m.output_padding != (0, 0) or m.groups != 1
                or m.dilation != (1, 1) or m.bias is not None):
            raise _NoAdjoint(f"no explicit adjoint for {m}")
        # Non-overlapping transposed conv (kernel = stride): its adjoint is the strided conv.
        return F.conv2d(u, m.weight, stride=m.stride)
    raise _NoAdjoint(f"no explicit adjoint for {type(m).__name__}")


class _NoAdjoint(Exception):
    """The network has a layer without an explicit adjoint here: use reverse-mode AD instead."""


def _seq_adjoint(seq: nn.Module, u: torch.Tensor) -> torch.Tensor:
    mods = list(seq.children()) if isinstance(seq, nn.Sequential) else [seq]
    for m in reversed(mods):
        u = _seq_adjoint(m, u) if isinstance(m, nn.Sequential) else _leaf_adjoint(m, u)
    return u


def _unet_residual_adjoint(net: nn.Module, u: torch.Tensor) -> torch.Tensor:
    """R^T u for the residual R of a frozen-activation :class:`gahb.models.UNet` (its forward in reverse)."""
    h, w = u.shape[-2:]
    m = net.multiple
    ph, pw = (-h) % m, (-w) % m
    g = F.pad(u, (0, pw, 0, ph)) if (ph or pw) else u  # adjoint of the final crop
    nb = len(net.encoder)
    g_skips: list[torch.Tensor | None] = [None] * nb
    for j in reversed(range(nb)):
        g = _seq_adjoint(net.decoder[j], g)
        c_up = net.up[j].out_channels
        g, g_skips[nb - 1 - j] = g[:, :c_up], g[:, c_up:]
        g = _leaf_adjoint(net.up[j], g)
    g = _seq_adjoint(net.mid, g)
    for b in reversed(range(nb)):
        g = _leaf_adjoint(net.pool, g) + g_skips[b]
        g = _seq_adjoint(net.encoder[b], g)
    if ph or pw:
        # Adjoint of the input padding (reflect/replicate fold edge rows back): tiny, via autograd.
        x = torch.zeros(u.shape, dtype=u.dtype, device=u.device, requires_grad=True)
        with torch.enable_grad():
            padded, _, _ = net._pad(x)
            (g,) = torch.autograd.grad(padded, x, g)
    return g


def _residual_adjoint_fn(lin: nn.Module):
    """A function u -> J^T u for the frozen network ``lin`` of a UNet or BF-CNN, or None."""
    from gahb.models import BFCNN, UNet

    if isinstance(lin, UNet):
        core = lambda u: _unet_residual_adjoint(lin, u)  # noqa: E731
    elif isinstance(lin, BFCNN):
        core = lambda u: _seq_adjoint(lin.net, u)  # noqa: E731
    else:
        return None
    return lambda u: u - core(u)  # f = y - R(y): J^T = I - R^T


class JacobianOperator:
    """Matrix-free J = df/dy of ``denoiser`` at the noisy image ``y``, for batches of vectors.

    Vectors are rows: ``jvp(V)`` maps (B, d) to the rows J v_b, ``vjp(U)`` to J^T u_b, and
    ``sym(V)`` to S v_b with S = (J + J^T)/2. Inputs may be any float dtype (float64 from
    SciPy); they are cast to the model's dtype and device, and the results are returned on the
    CPU in the input's dtype.

    Args:
        denoiser: a blind denoiser in eval mode (the gahb contract, ``forward(y) -> f(y)``).
        y: the noisy image, (C, H, W) or (1, C, H, W), pixel scale.
        backend: ``"linearized"`` (gahb networks), ``"autograd"`` (anything differentiable and
            per-sample), or ``"auto"`` (the former when the network qualifies).
        chunk: vectors per batched pass; bounds memory (activations of ``chunk`` images).
        channels_last: channels_last layout for the linearized network's convolutions.
        check: verify the linearized network against reverse-mode AD of the real one (one random
            cotangent) and J y against f(y).

    Attributes:
        shape: (C, H, W); d: number of pixels times channels; fy: f(y) as a flat float64 tensor;
        counts: number of vectors pushed through J ("jvp") and J^T ("vjp") so far.
    """

    def __init__(self, denoiser: nn.Module, y: torch.Tensor, backend: str = "auto", chunk: int = 16,
                 channels_last: bool = False, check: bool = True):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if denoiser.training:
            raise ValueError(
                "the denoiser is in train mode; call .eval() first (BF-BN must use its running "
                "statistics for the Jacobian to be that of the sampling-time denoiser)"
            )
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.denoiser = denoiser
        self.dtype, self.device = _model_dtype_device(denoiser, y)
        self.y = _as_image(y).to(self.dtype).to(self.device)
        self.shape = tuple(self.y.shape[1:])
        self.d = int(np.prod(self.shape))
        self.chunk = int(chunk)
        self.counts = {"jvp": 0, "vjp": 0}
        self._graph: tuple[int, torch.Tensor, torch.Tensor] | None = None
        with torch.no_grad():
            fy = denoiser(self.y)
        if fy.shape != self.y.shape:
            raise ValueError(f"denoiser output shape {tuple(fy.shape)} differs from input {tuple(self.y.shape)}")
        self.fy = fy.detach().reshape(-1).double()

        if backend == "auto":
            backend = "linearized" if _is_linearizable(denoiser) else "autograd"
        self.backend = backend
        self._lin = linearize(denoiser, self.y, channels_last) if backend == "linearized" else None
        # The transpose pass: an explicit adjoint network (one forward-cost pass) when the
        # architecture is known, else reverse-mode AD through the frozen network (about 2x).
        self._adjoint = _residual_adjoint_fn(self._lin) if self._lin is not None else None
        if self._adjoint is not None:
            try:
                with torch.no_grad():
                    self._adjoint(torch.zeros((1, *self.shape), dtype=self.dtype, device=self.device))
            except _NoAdjoint:
                self._adjoint = None
        if self._lin is not None and check:
            self._check_linearization()

    # ----------------------------------------------------------------------------------------
    def _check_linearization(self) -> None:
        """Compare J^T u of the frozen network with reverse-mode AD of the real one, and J y with f(y)."""
        g = torch.Generator(device="cpu").manual_seed(0)
        u = torch.randn(self.y.shape, generator=g, dtype=self.dtype).to(self.device)
        x = self.y.clone().requires_grad_(True)
        with torch.enable_grad():
            (ref,) = torch.autograd.grad(self.denoiser(x), x, u)
        got = self._vjp_batch(u)
        self._graph = None
        with torch.no_grad():
            lin_y = self._lin(self.y)
        err = (got - ref).norm() / ref.norm().clamp_min(1e-30)
        err_y = (lin_y.reshape(-1).double() - self.fy).norm() / self.fy.norm().clamp_min(1e-30)
        tol = 1e-4 if self.dtype in (torch.float32, torch.float64) else 1e-2
        if not (err < tol and err_y < tol):
            raise RuntimeError(
                f"frozen-activation network disagrees with autograd (VJP rel. error {err:.2e}, "
                f"J y vs f(y) {err_y:.2e}); use backend='autograd'"
            )

    def _to_images(self, V: torch.Tensor) -> torch.Tensor:
        V = torch.as_tensor(V)
        if V.ndim == 1:
            V = V.unsqueeze(0)
        return V.to(device=self.device, dtype=self.dtype).reshape(-1, *self.shape)

    def _reverse_graph(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A retained graph with ``b`` inputs, reused by every VJP of that batch size."""
        if self._graph is None or self._graph[0] != b:
            self._graph = None  # free the old graph first
            if self._lin is not None:
                # The linear network's graph does not depend on where it is evaluated.
                x = torch.zeros((b, *self.shape), dtype=self.dtype, device=self.device, requires_grad=True)
                with torch.enable_grad():
                    out = self._lin(x)
            else:
                x = self.y.expand(b, *self.shape).clone().requires_grad_(True)
                with torch.enable_grad():
                    out = self.denoiser(x)
            self._graph = (b, x, out)
        return self._graph[1], self._graph[2]

    def _jvp_batch(self, V: torch.Tensor) -> torch.Tensor:
        if self._lin is not None:
            with torch.no_grad():
                return self._lin(V)
        ys = self.y.expand_as(V).contiguous()
        try:
            _, t = torch.func.jvp(self.denoiser, (ys,), (V,))
            return t.detach()
        except (RuntimeError, NotImplementedError):
            # Double-backward trick: J v = d/du <J^T u, v>, for ops without forward-mode AD.
            x = ys.clone().requires_grad_(True)
            with torch.enable_grad():
                out = self.denoiser(x)
                u = torch.zeros_like(out, requires_grad=True)
                (g,) = torch.autograd.grad(out, x, u, create_graph=True)
                (t,) = torch.autograd.grad(g, u, V)
            return t.detach()

    def _vjp_batch(self, U: torch.Tensor) -> torch.Tensor:
        if self._adjoint is not None:
            with torch.no_grad():
                return self._adjoint(U.reshape(-1, *self.shape))
        b = U.shape[0]
        x, out = self._reverse_graph(b)
        (g,) = torch.autograd.grad(out, x, U.reshape(out.shape), retain_graph=True)
        return g.detach()

    def _apply(self, fn, V, count: str) -> torch.Tensor:
        in_dtype = V.dtype if isinstance(V, torch.Tensor) and V.is_floating_point() else torch.float64
        X = self._to_images(V)
        outs = []
        for lo in range(0, X.shape[0], self.chunk):
            outs.append(fn(X[lo:lo + self.chunk]).reshape(-1, self.d))
        self.counts[count] += X.shape[0]
        # Results always come back on the CPU: they feed NumPy/SciPy and float64 bookkeeping.
        return torch.cat(outs).to(device="cpu", dtype=in_dtype)

    def jvp(self, V: torch.Tensor) -> torch.Tensor:
        """Rows J v_b for the rows of ``V`` (B, d) (or images (B, C, H, W))."""
        return self._apply(self._jvp_batch, V, "jvp")

    def vjp(self, U: torch.Tensor) -> torch.Tensor:
        """Rows J^T u_b for the rows of ``U``."""
        return self._apply(self._vjp_batch, U, "vjp")

    def sym(self, V: torch.Tensor) -> torch.Tensor:
        """Rows S v_b with S = (J + J^T)/2, the symmetric part that the paper eigendecomposes."""
        return 0.5 * (self.jvp(V) + self.vjp(V))

    def linear_operator(self, kind: str = "sym"):
        """A ``scipy.sparse.linalg.LinearOperator`` (float64) for J, J^T or S (``kind`` in J/JT/sym)."""
        from scipy.sparse.linalg import LinearOperator

        fwd = {"J": self.jvp, "JT": self.vjp, "sym": self.sym}
        adj = {"J": self.vjp, "JT": self.jvp, "sym": self.sym}
        if kind not in fwd:
            raise ValueError(f"kind must be one of {sorted(fwd)}, got {kind!r}")

        def mm(f):
            def apply(X):
                X = np.asarray(X, dtype=np.float64)
                one = X.ndim == 1
                Xt = torch.from_numpy(np.ascontiguousarray(X.reshape(self.d, -1).T))
                out = f(Xt).numpy().T
                return out.reshape(-1) if one else out
            return apply

        return LinearOperator((self.d, self.d), matvec=mm(fwd[kind]), rmatvec=mm(adj[kind]),
                              matmat=mm(fwd[kind]), rmatmat=mm(adj[kind]), dtype=np.float64)

    def release(self) -> None:
        """Free the cached reverse graph (it holds activations of ``chunk`` images)."""
        self._graph = None


# --------------------------------------------------------------------------------------------
def _progress(total: int, desc: str, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not progress, leave=False)


def jacobian(denoiser: nn.Module | JacobianOperator, y: torch.Tensor | None = None, *, mode: str = "auto",
             chunk: int = 16, dtype: torch.dtype = torch.float64, backend: str = "auto",
             progress: bool = False) -> torch.Tensor:
    """The dense Jacobian J[i, j] = d f_i / d y_j (d x d) of the denoiser output f (not the residual).

    Computed ``chunk`` basis vectors at a time, so the working memory is the d x d result plus the
    activations of ``chunk`` images. ``mode="columns"`` pushes basis vectors through J (forward
    passes; the default for the linearized backend, where that is a plain inference pass),
    ``mode="rows"`` pulls them back through J^T (backward passes; the default for autograd).
    Exact to float rounding for bias-free networks; ``dtype`` is the storage type of the result.
    """
    op = denoiser if isinstance(denoiser, JacobianOperator) else JacobianOperator(denoiser, y, backend, chunk)
    if mode == "auto":
        mode = "columns" if op.backend == "linearized" else "rows"
    if mode not in ("columns", "rows"):
        raise ValueError(f"mode must be 'auto', 'columns' or 'rows', got {mode!r}")
    d, step = op.d, op.chunk
    J = torch.empty((d, d), dtype=dtype)
    apply = op.jvp if mode == "columns" else op.vjp
    with _progress(d, f"Jacobian {mode}", progress) as bar:
        for lo in range(0, d, step):
            hi = min(d, lo + step)
            E = torch.zeros((hi - lo, d), dtype=op.dtype, device=op.device)
            E[torch.arange(hi - lo), torch.arange(lo, hi)] = 1.0
            block = apply(E).to(dtype).cpu()  # (hi-lo, d): rows are J e_j (columns) or J^T e_i (rows)
            if mode == "columns":
                J[:, lo:hi] = block.T
            else:
                J[lo:hi, :] = block
            bar.update(hi - lo)
    op.release()
    return J


def jacobian_loop(denoiser: nn.Module, y: torch.Tensor, progress: bool = False) -> torch.Tensor:
    """Reference: one ``autograd.grad`` per output pixel on a retained graph, parameters frozen.

    This is the method of the official code (``calc_jacobian``, spec 7.2), applied to f instead of
    the residual. It exists to test and benchmark :func:`jacobian`; it is d times slower than a
    forward pass and is not meant for analysis.
    """
    if denoiser.training:
        raise ValueError("the denoiser is in train mode; call .eval() first")
    y = _as_image(y)
    flags = [p.requires_grad for p in denoiser.parameters()]
    for p in denoiser.parameters():
        p.requires_grad_(False)
    try:
        x = y.clone().requires_grad_(True)
        out = denoiser(x).reshape(-1)
        d = out.numel()
        J = torch.empty((d, x.numel()), dtype=out.dtype)
        for i in _iter(d, progress):
            (g,) = torch.autograd.grad(out[i], x, retain_graph=True)
            J[i] = g.reshape(-1)
    finally:
        for p, f in zip(denoiser.parameters(), flags):
            p.requires_grad_(f)
    return J


def _iter(n: int, progress: bool):
    from tqdm.auto import trange

    return trange(n, desc="Jacobian (per-pixel loop)", disable=not progress, leave=False)


# --------------------------------------------------------------------------------------------
@dataclass
class TopK:
    """Top-k eigenpairs of the symmetric part S of the Jacobian, from :func:`topk_eigs`.

    ``eigenvalues`` (k,) descending, ``eigenvectors`` (d, k) orthonormal columns (float64),
    ``residuals`` (k,) explicit ||S e - lambda e|| of each pair, ``matvecs`` vectors pushed through
    S, ``converged`` whether every residual met ``tol * |lambda_1|``.
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    residuals: np.ndarray
    matvecs: int
    converged: bool
    seconds: float
    method: str
    tol: float
    info: dict = field(default_factory=dict)


def _sym_matmat(op) -> callable:
    """(B, d) float64 CPU tensor -> (B, d) rows S v, for a JacobianOperator, a matrix or a callable.

    The Lanczos bookkeeping runs in torch, not NumPy: interleaving NumPy's BLAS thread pool with
    torch's OpenMP pool makes both spin for the same cores and slowed each product ~2-3x on CPU.
    """
    if isinstance(op, JacobianOperator):
        return op.sym
    if isinstance(op, (np.ndarray, torch.Tensor)):
        M = torch.as_tensor(np.asarray(op, dtype=np.float64))
        M = 0.5 * (M + M.T)
        return lambda X: X @ M  # M symmetric: rows of (M X^T)^T
    if callable(op):
        return lambda X: torch.as_tensor(np.asarray(op(X.numpy()), dtype=np.float64))
    raise TypeError("op must be a JacobianOperator, a square matrix or a callable on (B, d) arrays")


def topk_eigs(op, k: int = 32, *, tol: float = 1e-5, method: str = "lanczos", block: int = 2,
              guard: int = 2, max_basis: int | None = None, max_matvecs: int | None = None,
              v0: np.ndarray | None = None, seed: int = 0, d: int | None = None,
              progress: bool = False) -> TopK:
    """Largest-k eigenpairs of S = (J + J^T)/2 without forming J.

    ``method="lanczos"`` (default): block Lanczos (``block`` vectors per step; 1 = classical) with
    full reorthogonalisation in float64 and thick restarts when the basis reaches ``max_basis``.
    The default block of 2 needs ~5% more products than 1 but a pair of vectors costs ~10% less
    per vector than one on a 2-core CPU; it was faster in every ``benchmarks/bench_jacobian.py``
    run there. A GPU, where a pass barely costs more for more vectors, should get a larger block.
    Every product S v is kept, so Ritz pairs come from an explicit Rayleigh-Ritz projection and
    their residuals ||S e - theta e|| are exact (no extra products, no reliance on the
    three-term recurrence staying accurate in float32). It stops when every one of the top
    ``k + guard`` residuals is at most ``tol * |theta_1|``; for a symmetric matrix each Ritz value
    is then within that residual of an eigenvalue (and typically within residual^2 / gap).

    Why ``guard``: no residual can show an eigenvalue the Krylov space has not picked up yet. In a
    dense spectrum, Lanczos can stop with its k-th Ritz value converged to lambda_{k+1} while
    lambda_k is still missing (the answer is then off by a whole gap). With k = 32 this happened in
    3 of 20 random starts on the Jacobian of a Fashion-MNIST UNet at 40x40 (errors ~9e-3); also
    requiring the next 2 Ritz values to converge removed every miss for 2-10% more products.
    It lowers the odds; no Krylov method can rule a miss out. (``method="lanczos"`` only.)

    ``method="arpack"``: ``scipy.sparse.linalg.eigsh`` (implicitly restarted Lanczos) on the same
    operator with ``tol`` passed through, for comparison.

    ``op`` is a :class:`JacobianOperator`, a dense (d, d) matrix (symmetrised here), or a callable
    mapping (B, d) float64 rows to the rows S v (then pass ``d``).
    """
    if isinstance(op, JacobianOperator):
        d = op.d
    elif isinstance(op, (np.ndarray, torch.Tensor)):
        d = op.shape[0]
    elif d is None:
        raise ValueError("pass d when op is a callable")
    if not 1 <= k < d:
        raise ValueError(f"k must be in [1, d-1] = [1, {d - 1}], got {k}")
    if guard < 0:
        raise ValueError(f"guard must be >= 0, got {guard}")
    guard = min(guard, d - 1 - k)
    matmat = _sym_matmat(op)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    if method == "arpack":
        from scipy.sparse.linalg import LinearOperator, eigsh

        count = [0]

        def mv(x):
            count[0] += 1
            return matmat(torch.from_numpy(np.asarray(x, dtype=np.float64).reshape(1, d)))[0].numpy()

        lo = LinearOperator((d, d), matvec=mv, dtype=np.float64)
        start = v0 if v0 is not None else rng.standard_normal(d)
        ncv = min(d, max(2 * k + 1, 3 * k))
        w, V = eigsh(lo, k=k, which="LA", tol=tol, v0=start, ncv=ncv)
        order = np.argsort(w)[::-1]
        w, V = w[order], V[:, order]
        R = matmat(torch.from_numpy(np.ascontiguousarray(V.T))).numpy().T - V * w
        res = np.linalg.norm(R, axis=0)
        count[0] += k  # the explicit residual check above
        return TopK(w, V, res, count[0], bool(np.all(res <= 10 * tol * abs(w[0]) + 1e-12)),
                    time.perf_counter() - t0, "arpack", tol, {"ncv": ncv})
    if method != "lanczos":
        raise ValueError(f"method must be 'lanczos' or 'arpack', got {method!r}")
    return _block_lanczos(matmat, d, k, guard, tol, block, max_basis, max_matvecs, v0, rng, t0, progress)


def _orthonormalize(X: torch.Tensor, V: torch.Tensor | None, rng: np.random.Generator) -> torch.Tensor:
    """Rows of X made orthonormal and orthogonal to the rows of V (two Gram-Schmidt passes)."""
    for _ in range(2):
        if V is not None and V.shape[0]:
            X = X - (X @ V.T) @ V
        Q, R = torch.linalg.qr(X.T)
        X = Q.T
    # A rank-deficient block (invariant subspace found): refill those directions at random.
    diag = torch.diagonal(R).abs()
    small = diag < 1e-10 * max(1.0, float(diag.max()))
    if bool(small.any()):
        Z = torch.from_numpy(rng.standard_normal((int(small.sum()), X.shape[1])))
        if V is not None and V.shape[0]:
            Z = Z - (Z @ V.T) @ V
        keep = X[~small]
        Z = Z - (Z @ keep.T) @ keep
        Z = torch.linalg.qr(Z.T)[0].T
        X = torch.cat([keep, Z])
    return X.contiguous()


def _block_lanczos(matmat, d, k_out, guard, tol, b, max_basis, max_matvecs, v0, rng, t0, progress) -> TopK:
    if b < 1:
        raise ValueError(f"block must be >= 1, got {b}")
    k = k_out + guard  # Ritz pairs that must converge; the top k_out are returned
    if max_basis is None:
        max_basis = min(d, max(6 * k + 10 * b, 120))
    max_basis = min(d, max(max_basis, k + 2 * b))
    if max_matvecs is None:
        max_matvecs = max(20 * max_basis, 4 * d)
    f64 = torch.float64
    start = rng.standard_normal((b, d))
    if v0 is not None:
        start[0] = np.asarray(v0, dtype=np.float64).reshape(-1)
    X = _orthonormalize(torch.from_numpy(start), None, rng)
    cap = max_basis + b
    Vbuf = torch.zeros((cap, d), dtype=f64)  # orthonormal basis rows V[:m]
    Wbuf = torch.zeros((cap, d), dtype=f64)  # W[:m] = rows of S V
    H = torch.zeros((cap, cap), dtype=f64)   # H[:m, :m] = V S V^T
    m = 0
    matvecs, restarts, checks = 0, 0, 0
    t_products = 0.0
    theta = s = None
    res, scale = torch.tensor([float("inf")]), 1.0
    converged = False
    next_check = k
    bar = _progress(max_matvecs, "Lanczos", progress)
    while True:
        tp = time.perf_counter()
        SX = matmat(X).to(f64)
        t_products += time.perf_counter() - tp
        nb = X.shape[0]
        matvecs += nb
        bar.update(nb)
        V = Vbuf[:m]
        top = V @ SX.T
        H[:m, m:m + nb] = top
        H[m:m + nb, :m] = top.T
        blk = X @ SX.T
        H[m:m + nb, m:m + nb] = 0.5 * (blk + blk.T)
        Vbuf[m:m + nb], Wbuf[m:m + nb] = X, SX
        m += nb
        V, W = Vbuf[:m], Wbuf[:m]
        full = m + b > max_basis or matvecs >= max_matvecs or m >= d
        if m >= k and (m >= next_check or full):
            checks += 1
            theta, s = torch.linalg.eigh(H[:m, :m])
            theta, s = theta.flip(0), s.flip(1)  # descending
            Sk = s[:, :k]
            R = Sk.T @ W - theta[:k, None] * (Sk.T @ V)
            res = torch.linalg.norm(R, dim=1)
            scale = max(abs(float(theta[0])), 1e-300)
            worst = float(res.max()) / scale
            bar.set_postfix(res=f"{worst:.1e}")
            if worst <= tol:
                converged = True
                break
            if matvecs >= max_matvecs or m >= d:
                break
            # Checks are cheap but not free (an m x m eigh): space them ~5% of the basis apart
            # until the residuals are within a decade of the target, then check every block.
            next_check = m + (b if worst < 10 * tol else max(b, 4, int(0.05 * m)))
            if m + b > max_basis:
                # Thick restart: keep the best Ritz vectors; the new block (orthogonal to the
                # whole old basis) continues the Krylov expansion.
                keep = max(k + b, min(m - 2 * b, (max_basis + k) // 2))
                nextX = _orthonormalize(SX - (SX @ V.T) @ V, V, rng)
                newV, newW = s[:, :keep].T @ V, s[:, :keep].T @ W
                Vbuf[:keep], Wbuf[:keep] = newV, newW
                H.zero_()
                H[torch.arange(keep), torch.arange(keep)] = theta[:keep]
                m = keep
                restarts += 1
                X = nextX
                continue
        X = _orthonormalize(SX, V, rng)
        if m + X.shape[0] > d:
            X = X[: d - m]
    bar.close()
    if theta is None:  # pragma: no cover - guarded by the loop condition
        raise RuntimeError("Lanczos stopped before k Ritz values were available")
    V = Vbuf[:m]
    E0 = V.T @ s[:, :k_out]
    # Re-orthonormalise against float drift (changes nothing measurable when converged).
    E = torch.linalg.qr(E0)[0]
    E = E * torch.sign((E * E0).sum(0))
    res = res.numpy()
    if not converged:
        warnings.warn(
            f"Lanczos did not reach tol={tol:g} within {matvecs} products (max residual "
            f"{res.max() / scale:.2e} relative); the float32 network may limit accuracy near 1e-6",
            RuntimeWarning, stacklevel=3)
    return TopK(theta[:k_out].numpy().copy(), E.numpy(), res[:k_out], matvecs, converged, time.perf_counter() - t0,
                "lanczos", tol, {"block": b, "guard": guard, "max_basis": max_basis, "restarts": restarts,
                                 "checks": checks, "product_seconds": t_products})


# --------------------------------------------------------------------------------------------
@dataclass
class TraceEstimate:
    """tr J, the effective dimensionality (paper eq. 7): ``value`` with ``stderr`` (0 when exact)."""

    value: float
    stderr: float
    probes: int
    method: str
    seconds: float
    samples: np.ndarray | None = None

    def to_dict(self) -> dict:
        return {"value": self.value, "stderr": self.stderr, "probes": self.probes, "method": self.method,
                "seconds": self.seconds}


def trace_exact(op: JacobianOperator, progress: bool = False) -> TraceEstimate:
    """tr J = sum_i (J e_i)_i from d basis-vector JVPs in chunks: the diagonal only, never J."""
    t0 = time.perf_counter()
    d, step = op.d, op.chunk
    total = 0.0
    with _progress(d, "trace (exact)", progress) as bar:
        for lo in range(0, d, step):
            hi = min(d, lo + step)
            idx = torch.arange(hi - lo)
            E = torch.zeros((hi - lo, d), dtype=op.dtype, device=op.device)
            E[idx, lo + idx] = 1.0
            cols = op.jvp(E)
            total += float(cols[idx, lo + idx].double().sum())
            bar.update(hi - lo)
    return TraceEstimate(total, 0.0, d, "exact", time.perf_counter() - t0)


def trace_hutchinson(op: JacobianOperator, probes: int = 64, seed: int = 0,
                     deflate: np.ndarray | None = None, deflate_values: np.ndarray | None = None) -> TraceEstimate:
    """Hutchinson's estimator tr J ~ mean_p v_p^T J v_p over Rademacher probes v_p (one JVP each).

    Unbiased; the reported standard error is the sample standard deviation over sqrt(probes).
    For Rademacher probes Var(v^T J v) = 2 (||S||_F^2 - sum_i S_ii^2) with S = (J + J^T)/2.

    ``deflate`` (d, k) orthonormal columns Q, e.g. Lanczos eigenvectors (with their Ritz values
    ``deflate_values``, else k extra products give Q^T S Q), splits tr J = tr(Q^T S Q) +
    tr(P J P) with P = I - QQ^T and estimates only the second part: far less variance when Q spans
    the large eigenvalues (the idea of Hutch++, Meyer et al. 2021).
    """
    if probes < 2:
        raise ValueError(f"probes must be >= 2 to report a standard error, got {probes}")
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    Vp = (torch.randint(0, 2, (probes, op.d), generator=g).double() * 2.0 - 1.0)
    exact_part = 0.0
    if deflate is not None:
        Q = torch.as_tensor(np.asarray(deflate, dtype=np.float64))
        if deflate_values is not None:
            exact_part = float(np.sum(deflate_values))
        else:
            exact_part = float((op.sym(Q.T) * Q.T).sum())
        Vp = Vp - (Vp @ Q) @ Q.T
    JV = op.jvp(Vp)
    samples = (JV * Vp).sum(1).numpy() + exact_part
    value = float(samples.mean())
    stderr = float(samples.std(ddof=1) / math.sqrt(probes))
    return TraceEstimate(value, stderr, probes, "hutchinson" + ("-deflated" if deflate is not None else ""),
                         time.perf_counter() - t0, samples)
