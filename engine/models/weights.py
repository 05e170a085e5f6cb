"""Reading weight files safely and matching their tensors to a model's parameters.

Nothing here unpickles arbitrary objects: `.safetensors` is read with safetensors, anything else with
`torch.load(weights_only=True)`, which refuses code objects.
"""
from __future__ import annotations

import os
from collections import OrderedDict

import torch

from engine.core.errors import first_line

_PREFIXES = ("module.", "model.", "backbone.", "_orig_mod.")
_CONTAINER_KEYS = ("state_dict", "model", "model_state_dict", "net")


class WeightsError(ValueError):
    """A weights file is unreadable or does not fit the architecture."""


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightsError(f"weights file not found: {path}")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file
            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not a weights file"
        raise WeightsError(f"cannot read weights from {os.path.basename(path)}: "
                           f"{first_line(exc, 200)}") from None
    return _unwrap(state, path)


def _unwrap(state, path: str) -> dict[str, torch.Tensor]:
    if isinstance(state, dict):
        for key in _CONTAINER_KEYS:
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{os.path.basename(path)} holds no tensors")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}



def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _drop_counters(state: dict) -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict((k, v) for k, v in state.items() if not k.endswith("num_batches_tracked"))


def map_state_dict(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return a complete state dict for `target` filled from `state`.

    Matching is by name when the names agree; otherwise in order, shape for shape, which is how
    differently named ports of one network (e.g. lukemelas EfficientNet → timm) line up. A classifier
    whose shape differs (another number of classes) keeps the target's own tensors.
    """
    state = _strip_prefixes(state)
    if _names_match(state, target):
        return _fill_by_name(state, target)
    return _fill_in_order(state, target)


def _names_match(state: dict, target: dict) -> bool:
    wanted = set(_drop_counters(target))
    return len(wanted & set(state)) >= 0.9 * len(wanted)


def _fill_by_name(state: dict, target: dict) -> dict:
    merged = dict(target)
    mismatched = []
    for key, value in target.items():
        if key in state and state[key].shape == value.shape:
            merged[key] = state[key]
        elif key in state:
            mismatched.append(key)
    if len(mismatched) > 4:
        raise WeightsError(f"weights do not fit this architecture ({len(mismatched)} tensors differ in shape, "
                           f"e.g. {mismatched[0]})")
    return merged


def _fill_in_order(state: dict, target: dict) -> dict:
    src, dst = _drop_counters(state), _drop_counters(target)
    if len(src) != len(dst):
        raise WeightsError(f"weights do not fit this architecture ({len(src)} tensors in the file, "
                           f"{len(dst)} in the model)")
    merged = dict(target)
    pairs = list(zip(src.items(), dst.items()))
    for index, ((src_key, value), (dst_key, wanted)) in enumerate(pairs):
        if value.shape == wanted.shape:
            merged[dst_key] = value
        elif index < len(pairs) - 2:   # only the final classifier pair may differ
            raise WeightsError(f"weights do not fit this architecture: {src_key} {tuple(value.shape)} "
                               f"vs {dst_key} {tuple(wanted.shape)}")
    return merged
