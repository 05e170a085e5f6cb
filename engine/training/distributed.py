"""Training on several processes started by `torchrun` (PyTorch's launcher), one machine or several.

`torchrun --nproc-per-node N main.py train DATA --out RUN` starts N copies of the command; each finds its
place in the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), and
`engine.training.strategy.DistributedStrategy` splits the work between them, with the collectives here:

* the frozen layers' single pass over images (cached features or activations) is sharded: each process
  computes a contiguous slice of the images, the slices are gathered in rank order, so every process holds
  the whole cached tensor in the order one process would have computed; process 0 alone writes the disk
  entry (texts' sentence vectors and hidden states are computed by every process);
* the trainable part is wrapped in DistributedDataParallel (gradients averaged, frozen parameters left
  out), the training loader draws through a seeded DistributedSampler, so an epoch takes 1/N of the steps
  with N times the batch;
* process 0 validates, decides (the checkpoint kept, early stopping, a cancel) and broadcasts its decision;
  it alone writes the run folder, the progress and the summary; the others write to a scratch folder
  that is removed at the end;
* every collective has a timeout, so a process whose peer died never waits forever (torchrun also ends
  the others as soon as one exits with an error).

Without torchrun none of this runs: the same command trains in one process (`SingleProcess`).
Training states are written after each epoch only (not within one); `train --resume RUN` continues such
a run in one process.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from engine.core.callbacks import Callback
from engine.data.transforms import ReadableLoader

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
DEFAULT_TIMEOUT_S = 30 * 60      # the longest a process waits for its peers (process 0 validating alone)
TIMEOUT_VARIABLE = "TRANSFERLAB_DIST_TIMEOUT_S"


# -- where this process stands --------------------------------------------------------------------------
@dataclass(frozen=True)
class DistributedContext:
    """This process's place among the ones torchrun started."""

    rank: int
    world_size: int
    local_rank: int
    backend: str = "gloo"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        """Where collectives move tensors: NCCL only moves GPU tensors, Gloo CPU ones."""
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    @classmethod
    def from_env(cls, environ=None, uses_cuda: bool | None = None) -> DistributedContext | None:
        """The context torchrun's variables describe, or None for a plain run (no torchrun, or a single
        process: nothing to share, so nothing changes)."""
        environ = os.environ if environ is None else environ
        if not all(name in environ for name in TORCHRUN_VARIABLES):
            return None
        world_size = int(environ["WORLD_SIZE"])
        if world_size <= 1:
            return None
        return cls(int(environ["RANK"]), world_size, int(environ["LOCAL_RANK"]), backend_for(uses_cuda))


def backend_for(uses_cuda: bool | None = None) -> str:
    """NCCL between GPUs, Gloo between CPUs. `uses_cuda` None: whether this machine has a CUDA GPU."""
    if uses_cuda is None:
        uses_cuda = torch.cuda.is_available()
    return "nccl" if uses_cuda and dist.is_nccl_available() else "gloo"


def timeout_s(environ=None) -> float:
    environ = os.environ if environ is None else environ
    return float(environ.get(TIMEOUT_VARIABLE, DEFAULT_TIMEOUT_S))


@contextmanager
def process_group(context: DistributedContext):
    """The process group for the block: joined at the start (torchrun's rendezvous: MASTER_ADDR/PORT),
    left at the end, with a timeout on every collective."""
    if context.backend == "nccl":
        torch.cuda.set_device(context.local_rank)
    dist.init_process_group(context.backend, rank=context.rank, world_size=context.world_size,
                            timeout=timedelta(seconds=timeout_s()))
    try:
        yield context
    finally:
        dist.destroy_process_group()


# -- sharding a pass ---------------------------------------------------------------------------------------
def shard_range(count: int, rank: int, world_size: int) -> range:
    """The contiguous slice of `count` items that `rank` computes: sizes differ by at most one, the first
    ranks take the extra items, and the slices in rank order are 0..count-1."""
    base, extra = divmod(count, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (rank < extra))


def reassemble(pieces: list[torch.Tensor], counts: list[int], dim: int = 0) -> torch.Tensor:
    """The gathered (padded) pieces in rank order, each cut to its real length along `dim`: the items in
    the order of `shard_range`'s slices."""
    return torch.cat([piece.narrow(dim, 0, count) for piece, count in zip(pieces, counts)], dim=dim)


def all_gather_objects(value, context: DistributedContext) -> list:
    """`value` of every process (small, picklable), in rank order."""
    gathered = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def gather_shards(local: torch.Tensor | None, context: DistributedContext, dim: int = 1) -> torch.Tensor:
    """Every process's `local` slice (None for an empty one) concatenated along `dim` in rank order, on
    every process. Slices differ in length: each is padded to the longest for the collective."""
    shapes = all_gather_objects(None if local is None else tuple(local.shape), context)
    reference = next(shape for shape in shapes if shape is not None)
    counts = [shape[dim] if shape is not None else 0 for shape in shapes]
    padded_shape = list(reference)
    padded_shape[dim] = max(counts)
    padded = torch.zeros(padded_shape, dtype=torch.float32, device=context.device)
    if local is not None:
        padded.narrow(dim, 0, local.shape[dim]).copy_(local)
    pieces = [torch.empty_like(padded) for _ in range(context.world_size)]
    dist.all_gather(pieces, padded)
    return reassemble([piece.cpu() for piece in pieces], counts, dim)


def any_rank(flag: bool, context: DistributedContext) -> bool:
    """Whether `flag` is true on some process (every process learns it)."""
    value = torch.tensor([int(flag)], device=context.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def from_main(flag: bool, context: DistributedContext) -> bool:
    """Process 0's `flag`, on every process: process 0 decides, the others follow."""
    value = torch.tensor([int(flag)], device=context.device)
    dist.broadcast(value, src=0)
    return bool(value.item())


def sum_over_ranks(values: list[float], context: DistributedContext) -> list[float]:
    totals = torch.tensor(values, dtype=torch.float64, device=context.device)
    dist.all_reduce(totals)
    return totals.cpu().tolist()


def barrier(context: DistributedContext) -> None:
    dist.barrier()


# -- the fit -------------------------------------------------------------------------------------------
class StopAgreement(Callback):
    """Keeps the processes in step: a cancel on any process stops every one after the same batch, and
    process 0's early-stopping decision (it alone validates) is every process's."""

    def __init__(self, context: DistributedContext, trainer):
        self.context, self.trainer = context, trainer

    def on_batch_end(self, step: int, logs: dict) -> None:
        if any_rank(self.trainer.control.cancelled, self.context):
            self.trainer.control.cancel()          # the next batch's checkpoint raises Cancelled everywhere

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        stopping = self.trainer.early_stopping
        stopping.should_stop = from_main(stopping.should_stop, self.context)


def unwrapped(net: nn.Module) -> nn.Module:
    return net.module if isinstance(net, DistributedDataParallel) else net


def distributed_loader(loader: DataLoader, context: DistributedContext, seed: int) -> DataLoader:
    """The training loader again, drawing this process's share of each epoch (seeded, reshuffled by
    `set_epoch`; every process gets the same number of batches)."""
    sampler = DistributedSampler(loader.dataset, num_replicas=context.world_size, rank=context.rank,
                                 shuffle=True, seed=seed)
    options = {"batch_size": loader.batch_size, "sampler": sampler, "num_workers": loader.num_workers,
               "pin_memory": loader.pin_memory}
    if isinstance(loader, ReadableLoader):
        return ReadableLoader(loader.dataset, loader.on_unreadable, **options)
    return DataLoader(loader.dataset, collate_fn=loader.collate_fn, **options)


def wrap_trainable(net: nn.Module, context: DistributedContext) -> nn.Module:
    """`net` in DistributedDataParallel: only parameters that train take part (DDP leaves out those
    without requires_grad), and each of those is used in every forward, so no search for unused ones.
    A net with nothing to train stays as it is, for the fit to refuse in its own words."""
    trainable = [p for p in net.parameters() if p.requires_grad]
    if not trainable:
        return net
    device = trainable[0].device
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(net, device_ids=device_ids, find_unused_parameters=False)
