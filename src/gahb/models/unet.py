"""The paper's bias-free UNet (App. A.1, Table 1).

Widths double per encoder block (64, 128, 256, mid 512 for 3 blocks), average pooling down,
transposed convolutions up, concatenated skips, two 3x3 convolutions per block, BF-BN + ReLU
after every convolution except the first and the last. No additive constant anywhere, so the
network is homogeneous of order one and piecewise linear: f(y) = J(y) y (paper eq. 6).

Parameter counts for one channel and width 64: 1 block 366,080; 2 blocks 1,825,024;
3 blocks 7,659,264 (the paper's "7.6m"); 4 blocks 30,993,152.

The official code exposes three more architecture choices, kept here so that its checkpoints can
be imported exactly (:mod:`gahb.models.importers`): the convolutions per encoder, middle and
decoder block (2 each by default) and the average-pooling window (2; a window w pools with stride
2 and zero padding (w - 1) // 2, counting the padding, which stays linear and bias-free).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .adjoint import leaf_adjoint, sequential_adjoint
from .base import ResidualDenoiser, check_batch
from .bfbn import BFBatchNorm2d

PAD_MODES = ("reflect", "replicate", "zeros", "error")


def _conv(cin: int, cout: int, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)


class _ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3):
        super().__init__(_conv(cin, cout, k), BFBatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(ResidualDenoiser):
    """Bias-free UNet with ``num_blocks`` scales.

    Args:
        in_channels: image channels (1 for the paper's grayscale images).
        num_blocks: number of encoder/decoder blocks (pooling steps); Table 1 uses 1-4.
        width: channels of the first block (64 in the paper).
        kernel_size: convolution size (3).
        pad_mode: how to handle images whose sides are not multiples of ``2**num_blocks``.
            ``"reflect"`` (default) pads bottom/right by reflection up to the next multiple and
            crops the output back; padding is linear, so homogeneity and f(y) = J y still hold.
            ``"replicate"``/``"zeros"`` pad likewise; ``"error"`` refuses such inputs.
        enc_convs, mid_convs, dec_convs: convolutions per encoder / middle / decoder block (2 in
            the paper; the first encoder block's first convolution has no BF-BN, the last decoder
            block's last convolution is the linear output layer).
        pool_window: average-pooling window, stride 2 (2 in the paper).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_blocks: int = 3,
        width: int = 64,
        kernel_size: int = 3,
        pad_mode: str = "reflect",
        enc_convs: int = 2,
        mid_convs: int = 2,
        dec_convs: int = 2,
        pool_window: int = 2,
    ):
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        if enc_convs < 1 or mid_convs < 1 or dec_convs < 2:
            raise ValueError(f"need enc_convs >= 1, mid_convs >= 1, dec_convs >= 2; got {enc_convs}, "
                             f"{mid_convs}, {dec_convs}")
        if pool_window < 2:
            raise ValueError(f"pool_window must be >= 2, got {pool_window}")
        if pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        self.in_channels = in_channels
        self.num_blocks = num_blocks
        self.width = width
        self.pad_mode = pad_mode
        k = kernel_size
        w = [width * 2**b for b in range(num_blocks + 1)]

        def stack(cin: int, cout: int, n: int) -> list[nn.Module]:
            return [_ConvBNReLU(cin if i == 0 else cout, cout, k) for i in range(n)]

        # Encoder block 0 starts with a plain conv + ReLU (no BN), as in the official network.
        self.encoder = nn.ModuleList()
        self.encoder.append(
            nn.Sequential(_conv(in_channels, w[0], k), nn.ReLU(inplace=True), *stack(w[0], w[0], enc_convs - 1))
        )
        for b in range(1, num_blocks):
            self.encoder.append(nn.Sequential(*stack(w[b - 1], w[b], enc_convs)))
        self.pool = nn.AvgPool2d(pool_window, 2, padding=(pool_window - 1) // 2)
        self.mid = nn.Sequential(*stack(w[num_blocks - 1], w[num_blocks], mid_convs))
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for b in reversed(range(num_blocks)):
            self.up.append(nn.ConvTranspose2d(w[b + 1], w[b], 2, stride=2, bias=False))
            if b > 0:
                self.decoder.append(nn.Sequential(*stack(2 * w[b], w[b], dec_convs)))
            else:
                # Last block: its last convolution is the linear output layer.
                self.decoder.append(nn.Sequential(*stack(2 * w[b], w[b], dec_convs - 1), _conv(w[b], in_channels, k)))

    @property
    def multiple(self) -> int:
        """Image sides must be multiples of this (before padding)."""
        return 2**self.num_blocks

    def _pad(self, y: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        h, w = y.shape[-2:]
        m = self.multiple
        ph, pw = (-h) % m, (-w) % m
        if ph == 0 and pw == 0:
            return y, h, w
        if self.pad_mode == "error":
            raise ValueError(
                f"UNet with {self.num_blocks} blocks needs image sides divisible by {m}; got {h}x{w}. "
                f"Use fewer blocks, crop/resize the images, or build the UNet with pad_mode='reflect'."
            )
        if self.pad_mode == "reflect" and (ph >= h or pw >= w):
            raise ValueError(f"image {h}x{w} is too small to reflect-pad to a multiple of {m}")
        mode = "constant" if self.pad_mode == "zeros" else self.pad_mode
        return F.pad(y, (0, pw, 0, ph), mode=mode), h, w

    def residual(self, y: torch.Tensor) -> torch.Tensor:
        check_batch(y, self.in_channels)
        x, h, w = self._pad(y)
        skips = []
        for b, block in enumerate(self.encoder):
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.mid(x)
        for up, block in zip(self.up, self.decoder):
            x = up(x)
            x = block(torch.cat([x, skips.pop()], dim=1))
        return x[..., :h, :w]

    def residual_adjoint(self, u: torch.Tensor) -> torch.Tensor:
        """R^T u for the residual R of a frozen-activation copy of this UNet (its forward in reverse).

        Only for the linear network of :func:`gahb.analysis.jacobian.linearize` (BF-BN folded, every
        ReLU a :class:`~gahb.models.adjoint.FrozenReLU`), where R = I - J(y) (paper eq. 6); any other
        layer raises :class:`~gahb.models.adjoint.NoAdjoint`. ``u`` is a (B, C, H, W) batch.
        """
        h, w = u.shape[-2:]
        m = self.multiple
        ph, pw = (-h) % m, (-w) % m
        g = F.pad(u, (0, pw, 0, ph)) if (ph or pw) else u  # adjoint of the final crop
        nb = len(self.encoder)
        g_skips: list[torch.Tensor | None] = [None] * nb
        for j in reversed(range(nb)):
            g = sequential_adjoint(self.decoder[j], g)
            c_up = self.up[j].out_channels
            g, g_skips[nb - 1 - j] = g[:, :c_up], g[:, c_up:]  # adjoint of the skip concatenation
            g = leaf_adjoint(self.up[j], g)
        g = sequential_adjoint(self.mid, g)
        for b in reversed(range(nb)):
            g = leaf_adjoint(self.pool, g) + g_skips[b]
            g = sequential_adjoint(self.encoder[b], g)
        if ph or pw:
            # Adjoint of the input padding (reflect/replicate fold edge rows back): tiny, via autograd.
            x = torch.zeros(u.shape, dtype=u.dtype, device=u.device, requires_grad=True)
            with torch.enable_grad():
                padded, _, _ = self._pad(x)
                (g,) = torch.autograd.grad(padded, x, g)
        return g
