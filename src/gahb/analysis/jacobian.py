"""The Jacobian of a blind denoiser at one noisy image, dense or matrix-free (paper section 3, eq. 6).

A bias-free ReLU network in eval mode is piecewise linear and homogeneous, so at a fixed input y

    f(y) = J(y) y,          J(y) = df/dy  (d x d, d = C*H*W)                      (paper eq. 6)

and J(y) is the matrix of the linear network obtained by freezing every ReLU gate at the pattern
it takes on y. Everything in this module is built on one object, :class:`JacobianOperator`,
which applies J and J^T to batches of vectors without forming J:

* backend ``"linearized"`` (gahb's UNet and BF-CNN): a copy of the network with BF-BN folded into
  the convolutions and each ReLU replaced by multiplication with its recorded 0/1 gate
  (:func:`linearize`). J V is a plain batched forward pass of that linear network under
  ``no_grad`` (cheaper than forward-mode AD). J^T U is the network's own transpose
  (``residual_adjoint``, one forward-cost pass, :mod:`gahb.models.adjoint`) when it has one, else
  one backward pass through a cached graph of the linear network. Exact, not an approximation:
  the frozen network *is* J(y) (checked numerically against reverse-mode AD when it is built).
* backend ``"autograd"`` (any other differentiable per-sample denoiser, e.g. the closed-form
  :class:`~gahb.analysis.empirical.EmpiricalDenoiser` or a linear filter): batched forward-mode
  AD (``torch.func.jvp`` on a batch of copies of y) for J V, and a cached reverse graph on a batch
  of copies of y for J^T U.

Here also: the dense Jacobian in bounded-memory chunks (:func:`jacobian`) and the official
per-pixel reference loop (:func:`jacobian_loop`, for tests and benchmarks only). The operator
feeds the network-agnostic solvers of :mod:`gahb.analysis.eigensolvers`, re-exported here: the
top-k eigenpairs of the symmetric part S = (J + J^T)/2 (:func:`topk_eigs`) and the trace tr J,
the effective dimensionality of paper eq. 7 (:func:`trace_exact`, :func:`trace_hutchinson`).

Always evaluate Jacobians in eval mode: in train mode BF-BN divides by batch statistics and the
network is neither a per-sample function nor the one used for sampling.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from gahb.models.adjoint import FrozenReLU, NoAdjoint

from .eigensolvers import TopK, TraceEstimate, topk_eigs, trace_exact, trace_hutchinson

__all__ = [
    "BACKENDS", "JacobianOperator", "TopK", "TraceEstimate", "jacobian", "jacobian_loop", "linearize",
    "topk_eigs", "trace_exact", "trace_hutchinson",
]

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
            setattr(parent, child, FrozenReLU(gates[name]))
            frozen.append(child)
    if len(frozen) != len(gates):  # pragma: no cover - a ReLU that did not run on y
        raise RuntimeError(f"recorded {len(gates)} ReLU gates but the copy has {len(frozen)} ReLUs")
    lin.gates = gates  # type: ignore[attr-defined]
    return lin


def _residual_adjoint_fn(lin: nn.Module):
    """A function u -> J^T u for the frozen network ``lin``, from the network's own adjoint, or None.

    gahb's networks carry the transpose of their residual next to their forward pass
    (``UNet.residual_adjoint``, ``BFCNN.residual_adjoint``); a network without one gets None, and
    the operator falls back to reverse-mode AD.
    """
    core = getattr(lin, "residual_adjoint", None)
    if core is None:
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
        # The transpose pass: the network's own adjoint (one forward-cost pass) when it has one
        # and every layer of it is supported (a trial pass on zeros tells), else reverse-mode AD
        # through the frozen network (about 2x); _check_linearization tests whichever is used.
        self._adjoint = _residual_adjoint_fn(self._lin) if self._lin is not None else None
        if self._adjoint is not None:
            try:
                with torch.no_grad():
                    self._adjoint(torch.zeros((1, *self.shape), dtype=self.dtype, device=self.device))
            except NoAdjoint:
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

    This is the method of the official code (``calc_jacobian``), applied to f instead of
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
