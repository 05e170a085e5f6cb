"""Checkpoints: one `.safetensors` file whose header carries our JSON metadata (classes, preprocessing,
backbone, config, metrics). Loading reads tensors and JSON only, so a checkpoint can never run code."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone

from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from engine.core import modality as modalities
from engine.core.files import atomic_path
from engine.data.preprocessing import Preprocessing
from engine.models.catalog import ModelBundle
from engine.models.ensemble import MEMBER_FIELDS, ensemble_module, is_ensemble
from engine.models.heads import HEADS
from engine.models.predictor import tta_setting
from engine.models.trust import STATE_PREFIX

FORMAT = "transferlab-checkpoint/1"
META_KEY = "transferlab"
SHARED_FIELDS = ("classes", "preprocessing", "modality", "tokenizer")
"""What every member of an ensemble must have in common: they read one input and name the same classes."""


class CheckpointError(ValueError):
    """The file is not a TransferLab checkpoint, or is damaged."""


@dataclass
class Checkpoint:
    meta: dict
    trust_state: dict = field(default_factory=dict)     # the unknown-score's tensors (engine.models.trust)

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_dict(self.meta["preprocessing"])

    @property
    def modality(self) -> str:
        """The engine.core.modality name of what it classifies (images, for files from before texts)."""
        return self.meta.get("modality") or modalities.DEFAULT


def save_checkpoint(path: str | os.PathLike, model: nn.Module, bundle: ModelBundle, classes: list[str],
                    extra: dict | None = None, tta: str = "none") -> dict:
    """Write weights plus metadata atomically; returns the metadata written.

    "head" (read from the model) lets `load_checkpoint` rebuild the same classifier; "tta" says what the
    model predicts with (engine.models.predictor), for `predict` and the ONNX export.
    """
    modality = modalities.of(bundle.modality)
    meta = {"format": FORMAT, "modality": modality.name, **modality.checkpoint_meta(bundle, model),
            "classes": list(classes), "tta": tta_setting({"tta": tta}),
            "weights_origin": bundle.weights, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **(extra or {})}
    # CPU tensors, so a checkpoint trained on a GPU loads anywhere (`to(copy=True)`: the clone as before)
    state = {k: v.detach().contiguous().to("cpu", copy=True) for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={META_KEY: json.dumps(meta)})
    return meta


def save_ensemble_checkpoint(path: str | os.PathLike, members: list[tuple[nn.Module, dict]],
                             extra: dict | None = None) -> dict:
    """One checkpoint holding several trained models (bare, with their checkpoint metadata) that share
    classes and preprocessing (texts: modality and tokenizer too); it loads as
    `engine.models.ensemble.ProbabilityAverage`. The top level describes the first member, so code that only
    reads "backbone", "preprocessing" or a text model's tokenizer still works."""
    first = members[0][1]
    modality = modalities.of(first)
    for _, meta in members[1:]:
        if any(meta.get(name) != first.get(name) for name in SHARED_FIELDS):
            raise CheckpointError("ensemble members must share their classes and preprocessing (texts: their "
                                  "tokenizer)")
    described = [{**{name: meta.get(name) for name in MEMBER_FIELDS},
                  "temperature": (meta.get("trust") or {}).get("temperature", 1.0)} for _, meta in members]
    meta = {"format": FORMAT, "backbone": first["backbone"], "arch": first["arch"],
            "preprocessing": first["preprocessing"], "head": first.get("head", "linear"), "tta": "none",
            "classes": list(first["classes"]), "ensemble": described, "modality": modality.name,
            **modality.ensemble_meta([meta for _, meta in members]),
            "weights_origin": first.get("weights_origin"),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **(extra or {})}
    state = {f"members.{index}.{key}": value.detach().contiguous().to("cpu", copy=True)
             for index, (model, _) in enumerate(members) for key, value in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={META_KEY: json.dumps(meta)})
    return meta


def read_checkpoint_meta(path: str | os.PathLike) -> dict:
    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except Exception:  # noqa: BLE001 - safetensors raises several types for garbage input
        raise CheckpointError(f"{os.path.basename(path)} is not a safetensors checkpoint") from None
    if raw is None:
        raise CheckpointError(f"{os.path.basename(path)} has no TransferLab metadata")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise CheckpointError(f"{os.path.basename(path)} has damaged metadata") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{os.path.basename(path)}: unsupported checkpoint format {meta.get('format')!r}")
    return meta


def load_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, Checkpoint]:
    """Rebuild the architecture from metadata (a checkpoint without "head" has the linear one) and fill in
    every weight (strictly). The bare model: `engine.models.predictor.predictor` adds test-time flip. An
    ensemble checkpoint loads as `ProbabilityAverage`, each member with its own flip inside."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    meta = read_checkpoint_meta(path)
    head = meta.get("head", "linear")
    if head not in HEADS:
        raise CheckpointError(f"{os.path.basename(path)}: unknown head {head!r}")
    state, trust_state = split_trust_state(load_file(os.fspath(path), device="cpu"))
    if is_ensemble(meta):
        return _load_ensemble(path, meta, state), Checkpoint(meta, trust_state)
    model = modalities.of(meta).build_from_meta(meta, head)
    try:
        model.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{os.path.basename(path)} does not match its architecture: "
                              f"{str(exc).splitlines()[0][:200]}") from None
    return model.eval(), Checkpoint(meta, trust_state)


def split_trust_state(state: dict) -> tuple[dict, dict]:
    """(the model's tensors, the unknown-score's tensors without their prefix) of a checkpoint's."""
    prefix = STATE_PREFIX
    return ({k: v for k, v in state.items() if not k.startswith(prefix)},
            {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})


def add_trust(path: str | os.PathLike, trust: dict, scorer: nn.Module) -> dict:
    """Write calibration and the unknown score into a checkpoint (replacing earlier ones), atomically;
    returns its metadata."""
    meta = read_checkpoint_meta(path)
    state, _ = split_trust_state(load_file(os.fspath(path), device="cpu"))
    state.update({STATE_PREFIX + k: v.detach().contiguous().cpu() for k, v in scorer.state_dict().items()})
    meta["trust"] = trust
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={META_KEY: json.dumps(meta)})
    return meta


def rewrite_meta(path: str | os.PathLike, meta: dict) -> None:
    """Replace a checkpoint's metadata, its tensors as they are (atomically)."""
    state = load_file(os.fspath(path), device="cpu")
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={META_KEY: json.dumps(meta)})


def _load_ensemble(path: str | os.PathLike, meta: dict, state: dict) -> nn.Module:
    bare = []
    try:
        for index, member in enumerate(meta["ensemble"]):
            if member.get("head", "linear") not in HEADS:
                raise ValueError(f"unknown head {member.get('head')!r}")
            model = modalities.of(meta).build_member(meta, index)
            prefix = f"members.{index}."
            model.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
            bare.append(model.eval())
        if sum(len(model.state_dict()) for model in bare) != len(state):
            raise ValueError("it holds weights of no member")
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{os.path.basename(path)} does not match its ensemble: "
                              f"{str(exc).splitlines()[0][:200]}") from None
    return ensemble_module(bare, meta["ensemble"]).eval()
