"""What a training state holds besides the weights, as tensors plus JSON (never pickle): the random streams,
the optimizer and its learning-rate schedule, and a sampler that replays an epoch's order from any batch.

A fit resumed from these ends exactly as the uninterrupted fit would: the same batches in the same order, the
same augmentations and dropout masks, the same optimizer moments (engine.training.runstate saves them,
engine.training.trainer restores them).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import random
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

OPTIMIZER_PREFIX = "optimizer.state."
MODEL_PREFIX = "model."


class StateMismatch(ValueError):
    """A saved state does not fit what is being restored (another model, other layers training)."""


# -- random streams -------------------------------------------------------------------------------------
@dataclass
class RandomStreams:
    """Python's, NumPy's and torch's global random state at one instant. Augmentations (num_workers=0) and
    dropout draw from torch's; the loaders' own generator is saved apart, at each epoch's start."""

    python: list
    numpy: dict
    torch: torch.Tensor
    cuda: list[torch.Tensor] | None = None   # each GPU's generator (dropout on a GPU), once CUDA is in use

    @classmethod
    def capture(cls) -> RandomStreams:
        version, internal, gauss = random.getstate()
        name, keys, pos, has_gauss, cached = np.random.get_state()
        return cls([version, list(internal), gauss],
                   {"name": name, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss),
                    "cached_gaussian": float(cached)},
                   torch.get_rng_state(),
                   torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None)

    def restore(self) -> None:
        version, internal, gauss = self.python
        random.setstate((version, tuple(internal), gauss))
        saved = self.numpy
        np.random.set_state((saved["name"], np.asarray(saved["keys"], dtype=np.uint32), saved["pos"],
                             saved["has_gauss"], saved["cached_gaussian"]))
        torch.set_rng_state(self.torch)
        if self.cuda and torch.cuda.is_available() and len(self.cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(self.cuda)

    def to_json(self) -> dict:
        return {"python": self.python, "numpy": self.numpy}

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensor parts, CPU tensors as a training state saves them."""
        cuda = {f"rng.cuda.{index}": state for index, state in enumerate(self.cuda or [])}
        return {"rng.torch": self.torch, **cuda}

    @classmethod
    def from_saved(cls, data: dict, tensors: dict[str, torch.Tensor]) -> RandomStreams:
        cuda = list(itertools.takewhile(lambda t: t is not None,
                                        (tensors.get(f"rng.cuda.{index}") for index in itertools.count())))
        return cls(data["python"], data["numpy"], tensors["rng.torch"], cuda or None)


# -- the epoch in progress ------------------------------------------------------------------------------
@dataclass
class EpochProgress:
    """Where an epoch stands: the loader generator's state when it began (which replays its order), the
    batches done and the sums its logged loss and accuracy come from, and the random streams right after
    the last batch done. `resumed`: read back from a state, so the epoch continues rather than starts."""

    loader_start: torch.Tensor
    batches: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    streams: RandomStreams | None = None
    resumed: bool = False

    def add(self, loss_sum: float, correct: int, seen: int, streams: RandomStreams) -> None:
        self.batches += 1
        self.loss_sum += loss_sum
        self.correct += correct
        self.seen += seen
        self.streams = streams

    def to_json(self) -> dict:
        return {"batches_done": self.batches, "loss_sum": self.loss_sum, "correct": self.correct,
                "seen": self.seen}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {**self.streams.tensors(), "rng.loader_epoch_start": self.loader_start}

    @classmethod
    def from_saved(cls, position: dict, rng: dict, tensors: dict[str, torch.Tensor]) -> EpochProgress:
        return cls(tensors["rng.loader_epoch_start"], position["batches_done"], position["loss_sum"],
                   position["correct"], position["seen"], RandomStreams.from_saved(rng, tensors),
                   resumed=True)


# -- the epoch's order ------------------------------------------------------------------------------------
class SkippableSampler(Sampler[int]):
    """A training loader's own sampler (RandomSampler or WeightedRandomSampler), minus the first `skip`
    indices of its next epoch: a resumed epoch draws the same order from the same generator state and
    drops the batches done before, without loading them. `skip` applies once."""

    def __init__(self, inner: Sampler[int]):
        self.inner = inner
        self.skip = 0

    def __iter__(self):
        skip, self.skip = self.skip, 0
        # islice runs the inner sampler to its end, so it makes every draw it would make unwrapped
        return itertools.islice(iter(self.inner), skip, None)

    def __len__(self) -> int:
        return len(self.inner)


def skippable(loader: DataLoader) -> SkippableSampler:
    """Put a SkippableSampler between a shuffling `loader` and its sampler; returns it.

    A DataLoader refuses a new sampler once built, but its BatchSampler reads `.sampler` at every epoch, so
    the wrapper goes there. The loader's own draws from its generator (the base seed, then the sampler's
    permutation: torch/utils/data/dataloader.py `_BaseDataLoaderIter`) are unchanged, so a fresh fit
    sees exactly the order it saw before this wrapper existed.
    """
    batches = loader.batch_sampler
    if batches is None:
        raise ValueError("a resumable training loader needs automatic batching (batch_size)")
    if not isinstance(batches.sampler, SkippableSampler):
        batches.sampler = SkippableSampler(batches.sampler)
    return batches.sampler


# -- weights ----------------------------------------------------------------------------------------------
def weights_digest(model: nn.Module) -> str:
    """Digest of every tensor of `model`: a resumed fit checks it starts from the same weights, since its
    state holds only the tensors that training may have changed."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def model_tensors(model: nn.Module, trained: set[str]) -> dict[str, torch.Tensor]:
    """The tensors training may have changed: parameters that trained in some stage so far, and every
    buffer (BatchNorm statistics). Frozen parameters are the starting weights, rebuilt on resume."""
    parameters = {name for name, _ in model.named_parameters()}
    # saved as CPU tensors (`.to("cpu")` is no copy on a CPU), so a state resumes on any device
    return {MODEL_PREFIX + name: tensor.detach().clone(memory_format=torch.contiguous_format).to("cpu")
            for name, tensor in model.state_dict().items() if name in trained or name not in parameters}


def restore_model(model: nn.Module, tensors: dict[str, torch.Tensor]) -> set[str]:
    """Load the saved tensors into `model` (in place, keeping its memory format); returns the names of the
    parameters among them (the ones trained so far)."""
    saved = {name[len(MODEL_PREFIX):]: t for name, t in tensors.items() if name.startswith(MODEL_PREFIX)}
    state = model.state_dict()
    unknown = sorted(set(saved) - set(state))
    if unknown:
        raise StateMismatch(f"the saved state holds layers this model lacks ({', '.join(unknown[:3])})")
    with torch.no_grad():
        for name, tensor in saved.items():
            if state[name].shape != tensor.shape:
                raise StateMismatch(f"the saved {name} has shape {tuple(tensor.shape)}, the model's "
                                    f"{tuple(state[name].shape)}")
            state[name].copy_(tensor)
    return saved.keys() & {name for name, _ in model.named_parameters()}


# -- optimizer and schedule -----------------------------------------------------------------------------
def optimizer_state(optimizer: torch.optim.Optimizer, names: dict[int, str]) -> tuple[dict, dict]:
    """`optimizer.state_dict()` as (JSON, tensors): each per-parameter tensor (AdamW's moments and its
    `step`, SGD's momentum) as "optimizer.state.<index>.<name>", everything else as JSON. `names` maps
    id(parameter) to its name, recorded so a restore can check the same parameters train."""
    state = optimizer.state_dict()
    tensors, values = {}, {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{OPTIMIZER_PREFIX}{index}.{key}"] = value.detach().clone(
                    memory_format=torch.contiguous_format).to("cpu")
            else:
                values.setdefault(str(index), {})[key] = value
    groups = [{key: list(value) if isinstance(value, tuple) else value for key, value in group.items()}
              for group in state["param_groups"]]
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    return checked_json({"param_groups": groups, "values": values, "parameters": order}), tensors


def restore_optimizer(optimizer: torch.optim.Optimizer, saved: dict, tensors: dict[str, torch.Tensor],
                      names: dict[int, str]) -> None:
    """Load a state written by `optimizer_state` into a freshly built optimizer of the same recipe. Tensors
    shaped like their parameter take its memory format (channels_last), as the optimizer made them."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if [names[id(p)] for p in params] != saved["parameters"]:
        raise StateMismatch("the saved optimizer state is for other layers than the ones that train now")
    state: dict[int, dict] = {}
    for key, tensor in tensors.items():
        if not key.startswith(OPTIMIZER_PREFIX):
            continue
        index, name = key[len(OPTIMIZER_PREFIX):].split(".", 1)
        param = params[int(index)]
        state.setdefault(int(index), {})[name] = torch.empty_like(param).copy_(tensor) \
            if tensor.shape == param.shape and name != "step" else tensor
    for index, values in saved["values"].items():
        state.setdefault(int(index), {}).update(values)
    current = optimizer.state_dict()["param_groups"]
    groups = [{key: tuple(value) if isinstance(now.get(key), tuple) else value for key, value in group.items()}
              for group, now in zip(saved["param_groups"], current)]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def schedule_state(schedule: torch.optim.lr_scheduler.LRScheduler) -> dict:
    """The schedule's state_dict: plain values for OneCycleLR and LambdaLR (whose functions are not in it:
    the same recipe rebuilds them, then this is loaded)."""
    return checked_json(schedule.state_dict())


def checked_json(data: dict) -> dict:
    """`data` unchanged, after making sure JSON holds it exactly (a torch upgrade could add an object)."""
    try:
        json.dumps(data)
    except TypeError as exc:
        raise TypeError(f"training state not JSON-serialisable: {exc}") from None
    return data
