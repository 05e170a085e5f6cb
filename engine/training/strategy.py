"""How a fit's work is spread over processes, apart from the loop and the inputs (as Lightning separates
its strategies from its loop).

`SingleProcess` (the default) does everything here. `DistributedStrategy` is one of the processes torchrun
started (engine.training.distributed has the collectives): the training loader draws this process's
share of each epoch, the trainable part is wrapped in DistributedDataParallel, the epoch's loss and
accuracy are summed over the processes, process 0 alone validates, decides and writes the run folder (the
others write to a scratch folder removed with the strategy), and an input pipeline can shard its frozen
pass through `sharded` / `gather` / `any`.
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from engine.core.callbacks import Callback
from engine.training.config import TrainConfig
from engine.training.distributed import (StopAgreement, all_gather_objects, any_rank, distributed_loader,
                                         gather_shards, shard_range, sum_over_ranks, unwrapped, wrap_trainable)


class SingleProcess:
    """One process: every pass, every batch and every file is this process's."""

    world_size = 1
    is_main = True              # validates, decides, and writes the run folder
    shares_passes = False       # whether input pipelines shard their frozen passes now
    saves_within_epoch = True   # whether a state inside an epoch can be resumed

    def refusal(self, config: TrainConfig) -> str | None:
        """Why this strategy cannot train `config` (None: it can)."""
        return None

    def folder(self, run_dir: Path) -> Path:
        """Where this process writes the run."""
        return run_dir

    def device(self, device: torch.device) -> torch.device:
        """The device this process trains on, given the one the config asks for."""
        return device

    def callbacks(self, trainer) -> list[Callback]:
        """Callbacks that keep the processes in step, run before the caller's."""
        return []

    def distribute(self, net: nn.Module, loader: DataLoader, seed: int, notes: list[str]):
        """(network to step, training loader) for this process, from the pipeline's."""
        return net, loader

    def run_epoch(self, loader: DataLoader, epoch: int, train: Callable[[], list[float]]) -> list[float]:
        """[loss sum, correct, seen] of one training epoch (`train` runs this process's batches)."""
        return train()

    def validate(self, net: nn.Module, evaluate: Callable[[nn.Module], tuple[float, float]]) -> tuple[float, float]:
        """(val loss, val accuracy) of `net`, by `evaluate`."""
        return evaluate(net)

    def alone(self, compute: Callable):
        """`compute()` by this process on its own (the final evaluation)."""
        return compute()

    def sharded(self, count: int, compute_range: Callable[[range], torch.Tensor]) -> torch.Tensor:
        """[V, count, ...]: `compute_range(items)` over `count` items, the items shared among processes."""
        return compute_range(range(count))

    def gather(self, value) -> list:
        """`value` of every process (small, picklable), in rank order."""
        return [value]

    def any(self, flag: bool) -> bool:
        """Whether `flag` is true on some process."""
        return flag


class DistributedStrategy(SingleProcess):
    """One of the processes torchrun started (module docstring). Build it, and the Trainer that uses it,
    in every process inside `process_group(context)`; `close()` (or a `with` block) removes the scratch
    folder the processes other than 0 write to."""

    def __init__(self, context):
        self.context = context
        self.world_size, self.is_main = context.world_size, context.is_main
        self.shares_passes = True          # until process 0 evaluates alone
        self.saves_within_epoch = False    # a position inside an epoch is this process's share of it
        self._scratch: tempfile.TemporaryDirectory | None = None
        self._wrapped: nn.Module | None = None

    def __enter__(self) -> DistributedStrategy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    def refusal(self, config: TrainConfig) -> str | None:
        if config.balance == "sampler":
            return ("--balance sampler is not available with torchrun (each process draws its share with a "
                    "DistributedSampler): use --balance loss")
        return None

    def folder(self, run_dir: Path) -> Path:
        if self.is_main:
            return run_dir
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix=f"transferlab-rank{self.context.rank}-")
        return Path(self._scratch.name)

    def device(self, device: torch.device) -> torch.device:
        """One GPU per process with NCCL: the one torchrun's LOCAL_RANK names."""
        return self.context.device if self.context.backend == "nccl" else device

    def callbacks(self, trainer) -> list[Callback]:
        return [StopAgreement(self.context, trainer)]

    def distribute(self, net: nn.Module, loader: DataLoader, seed: int, notes: list[str]):
        """The trainable part in DistributedDataParallel, the loader drawing this process's share."""
        self._wrapped = None             # the previous stage's wrapper lets go of its gradient hooks
        self._wrapped = wrap_trainable(net, self.context)
        note = (f"distributed: {self.world_size} processes ({self.context.backend}), "
                f"{loader.batch_size} images per process and step")
        if note not in notes:
            notes.append(note)
        return self._wrapped, distributed_loader(loader, self.context, seed)

    def run_epoch(self, loader: DataLoader, epoch: int, train: Callable[[], list[float]]) -> list[float]:
        """This process's share of the epoch (reshuffled by `set_epoch`); the totals are every process's."""
        loader.sampler.set_epoch(epoch)
        return sum_over_ranks(train(), self.context)

    def validate(self, net: nn.Module, evaluate) -> tuple[float, float]:
        """Process 0 validates; the others wait for its decisions (StopAgreement)."""
        if not self.is_main:
            return math.nan, math.nan
        return evaluate(unwrapped(net))

    def alone(self, compute: Callable):
        """Process 0 alone evaluates (the others have no checkpoint): passes are no longer shared."""
        self.shares_passes = False
        return compute()

    def sharded(self, count: int, compute_range: Callable[[range], torch.Tensor]) -> torch.Tensor:
        """Each process computes a contiguous slice; the slices gathered in rank order are every process's."""
        share = shard_range(count, self.context.rank, self.world_size)
        return gather_shards(compute_range(share) if len(share) else None, self.context)

    def gather(self, value) -> list:
        return all_gather_objects(value, self.context)

    def any(self, flag: bool) -> bool:
        return any_rank(flag, self.context)
