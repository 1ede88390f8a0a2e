"""Data-parallel training under ``torchrun`` (DDP: gloo on CPU, NCCL on CUDA).

Launch the ordinary command under torchrun; nothing else changes::

    torchrun --standalone --nproc_per_node 2 -m gahb train --dataset fashion-mnist --n-train 1000 ...
    # equivalently: python -m torch.distributed.run --standalone --nproc_per_node 2 -m gahb train ...

(``--n-train`` is the same flag as ``--n``; torchrun's own argument parser rejects ``--n`` as an
ambiguous abbreviation of its options.)

Every rank draws the *whole* global batch (indices, noise levels, noise) from identical
generators and keeps only its slice, so the data each image sees do not depend on the number of
processes and every rank's generator state is the same (rank 0 saves it). Each rank's loss is
its share of the global sum divided by the global batch, times the world size, so DDP's gradient
averaging yields exactly the gradient of the global loss.

Caveat: BF-BN normalises by per-rank batch statistics (the running sd broadcast from rank 0
before every forward, DDP's default). With 2 ranks a batch of 64 is normalised as two halves
of 32, so a multi-process run is close to, not identical with, a single-process one; this is
the usual non-synchronised batch norm of DDP and matches what the official ``DataParallel``
training did (each GPU normalised its own chunk).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from gahb.utils.device import resolve_device


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # whether we initialised the process group (and must destroy it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def shard(self, n: int) -> slice:
        """This rank's contiguous slice of a global batch of ``n`` items (sizes differ by <= 1)."""
        base, extra = divmod(n, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.active:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            # Tear down together: a gloo rank destroying its group while its peer is still
            # using (or already closing) the connection can abort the process at exit
            # ("terminate called without an active exception"; seen once in CI).
            try:
                dist.barrier()
            except RuntimeError:
                pass
            dist.destroy_process_group()
            self.owns_group = False


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: str = "auto") -> DistContext:
    """Set up the process group when launched by torchrun (``WORLD_SIZE > 1``), else a 1-rank context.

    On CUDA each rank takes GPU ``LOCAL_RANK``; on CPU the gloo backend is used.
    """
    if not launched_by_torchrun() and not (dist.is_available() and dist.is_initialized()):
        return DistContext(device=resolve_device(device))
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this PyTorch build")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    elif dev.type != "cpu":
        raise RuntimeError(f"distributed training supports CPU (gloo) and CUDA (nccl), not {dev.type}")
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        owns = True
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, dev, owns)
