"""What kind of sample a dataset holds, and the one place the engine and the window ask about it.

A `Modality` (images, texts, or one a user registers) says how its samples are read into the one scan
pipeline, which pretrained models it offers, how the trainer feeds them, how a checkpoint is rebuilt,
exported, verified and run, how the window shows a sample, and the words every message uses. Outside
the modality packages (`engine.modalities.image`, `engine.modalities.text`) code asks the modality and
never compares its name: a third modality plugs in with `register` and edits no engine file, as timm's
model registry or fastai's blocks do.

The built-in modalities are named here by import path and imported on first use, so this module stays
torch-free and sits below every layer that asks it.
"""
from __future__ import annotations

import importlib
import os
from typing import Any

DEFAULT = "image"   # what a report, checkpoint or ONNX file from before texts existed holds

_BUILT_IN = {"image": "engine.modalities.image:IMAGES", "text": "engine.modalities.text:TEXTS"}
_registered: dict[str, Modality] = {}
_order: list[str] = []       # asked in this order for a source or a backbone; registered ones first


class Modality:
    """One kind of sample. Subclasses fill in what their samples need; the defaults say what is optional.

    The words: `noun` ("image") and `nouns` ("images") in every message, `count(n)` ("1 image", "3 images").
    """

    name: str = ""
    noun: str = "sample"
    nouns: str = "samples"
    model_noun: str = "model"     # what its pretrained models are called: "image backbone", "text encoder"

    @property
    def model_noun_article(self) -> str:
        return ("an " if self.model_noun[:1] in "aeiou" else "a ") + self.model_noun

    def count(self, n: int) -> str:
        return f"{n:,} {self.noun if n == 1 else self.nouns}"

    # -- data: the reader of the one scan pipeline ---------------------------------------------------
    def reads(self, source) -> bool:
        """Whether `source` (a path) holds this modality's samples; asked before a scan picks a reader."""
        raise NotImplementedError

    def scan(self, source, *, seed: int = 0, backbone: str | None = None, progress=None, control=None,
             **options):
        """The DatasetReport of `source`; `backbone` lets a modality measure samples as that model sees
        them (a text encoder's tokens); `options` are the reader's own (text and label columns)."""
        raise NotImplementedError

    def sample_fields(self, sample) -> dict:
        """What a prediction row shows beside a sample's path (a text's text); {} when the path says it."""
        return {}

    # -- models ---------------------------------------------------------------------------------------
    def owns_backbone(self, name: str | None) -> bool:
        """Whether `name` (a catalog name or a local folder) is one of this modality's pretrained models."""
        return False

    def backbone_rows(self) -> list[dict]:
        """The catalog as rows for `list-backbones` and the window's model list, each with its "modality"."""
        return []

    @property
    def default_backbone(self) -> str | None:
        return None

    takes_model_folders = False   # whether a local model folder (a Hugging Face one) is a backbone too

    def check_backbone(self, name: str) -> None:
        """Raise a one-line error when `name` cannot be built, before any work starts."""

    def checkpoint_meta(self, bundle, model) -> dict:
        """What a checkpoint records to rebuild `model` ("modality", "backbone", "head", ...)."""
        raise NotImplementedError

    def build_from_meta(self, meta: dict, head: str):
        """The bare, untrained architecture a checkpoint's metadata describes (weights are loaded after)."""
        raise NotImplementedError

    def ensemble_meta(self, member_metas: list[dict]) -> dict:
        """What an ensemble checkpoint records, beside each member's backbone and head, to rebuild its
        members (texts: the shared tokenizer and each encoder's architecture)."""
        return {}

    def build_member(self, meta: dict, index: int):
        """Member `index` of an ensemble checkpoint, weights still to be loaded."""
        member = meta["ensemble"][index]
        return self.build_from_meta({**meta, **member}, member.get("head", "linear"))

    # -- training ---------------------------------------------------------------------------------------
    def training_inputs(self):
        """A fresh input pipeline (engine.training.inputs.TrainingInputs) for one fit: it builds the model
        and feeds the trainer this modality's samples."""
        raise NotImplementedError

    def eval_inputs(self, model, checkpoint, samples, batch_size: int):
        """(network, loader) that score `samples` with a loaded checkpoint exactly as the run evaluated."""
        raise NotImplementedError

    def recipe_search(self):
        """The RecipeSearch class whose phases suit this modality; None when it has none (the window and
        `train --auto` then say so in one line)."""
        return None

    # -- the deep check of a dataset (engine.audit) -----------------------------------------------------
    copy_measure: str = "cosine of the frozen features"   # what confirms a near-duplicate pair, in words
    copy_limit: float = 0.95                               # ... and from which value a pair is one

    def frozen_features(self, report, samples, backbone: str, *, seed: int = 0, control=None,
                        progress=None, device=None):
        """[N, D] features of `samples` from the pretrained `backbone`, through the cache a search and a
        head-only fit share, computed on `device` (a torch.device; None: the CPU); NaN rows for samples
        that cannot be read any more."""
        raise NotImplementedError

    def audit_signatures(self, samples, *, control=None, progress=None):
        """What the deep check reads of each sample itself (pixels, text), for `odd_samples` and
        `copy_similarity`; None when it reads nothing."""
        return None

    def odd_samples(self, samples, signatures) -> dict[int, str]:
        """index -> why that sample is odd on its own (blank, dark, empty, ...)."""
        return {}

    def copy_similarity(self, samples, signatures, pairs):
        """Per candidate pair (rows of `pairs`, sample indices) how alike the two samples are themselves,
        comparable with `copy_limit`; None: the features' cosine decides."""
        return None

    # -- outputs ----------------------------------------------------------------------------------------
    def export(self, run_dir, out, **options) -> dict:
        """Write a verified ONNX file of the run; returns its verification."""
        raise NotImplementedError

    int8_method = "static"      # how an int8 export is made: 'static' (calibrated activations) or 'dynamic'

    def row_input(self, row: dict):
        """A predictions.json row's sample as an exported file's classifier takes it (`path`, and the
        modality's own fields); None when it cannot be read any more."""
        raise NotImplementedError

    def classifier(self, path, kind: str, device: str = "cpu"):
        """What predicts with a checkpoint (kind 'torch') or an exported file (kind 'onnx')."""
        raise NotImplementedError

    def prediction_items(self, arguments: list[str], **options) -> tuple[list[tuple[str, object]], list[dict]]:
        """What a user asked to predict on, as ((origin, payload) pairs, skipped [{"path", "reason"}]):
        files and folders for images; texts, text files or CSVs for texts. ValueError when nothing was given."""
        raise NotImplementedError

    def prediction_input(self, payload):
        """One payload as its classifier's input; engine.outputs.predict.SampleError when it cannot be used."""
        return payload

    def prediction_fields(self, payload) -> dict:
        """What a printed prediction shows beside its origin (a text's text); {} when the origin says it."""
        return {}

    def __repr__(self) -> str:
        return f"<modality {self.name}>"

    # -- the window: plain values and words (no Qt, no torch), so it asks and never compares a name -----
    sample_view: str = "label"     # how the window shows one sample: see THUMBNAIL_VIEW, TEXT_VIEW, LABEL_VIEW
    combines_sources = True        # whether several dropped folders or files are scanned as one dataset
    assesses_backbones = False     # whether its models are scored against each other (Compare step, a search)
    loads_weight_files = False     # whether a model may start from a weights file the user chooses
    blocks_noun = "blocks"         # what "train the last N ..." counts in its models
    pretrained_on = "Pretrained"   # what its pretrained weights learned from, in the weights menu
    layer_tree_depth = 1           # how deep the Model step opens the layer tree (down to what N counts)
    own_settings: tuple[str, ...] = ()   # TrainConfig fields only this modality's training reads

    @property
    def settings_key(self) -> str:
        """Where the window remembers the model last chosen for this modality's data."""
        return f"model/{self.name}"

    def table_columns(self, source) -> dict:
        """A table's columns and the reader's guesses ({"columns", ...}) for the Data step's pickers; {} when
        its reader takes no column options."""
        return {}

    def problem_file(self, root, where: str):
        """The file a scan problem at `where` (as the report says it) is in, for the window's Open button."""
        from pathlib import Path
        return Path(where)

    def input_size_words(self, size: int) -> str:
        """A model's input size in words ("224 × 224 px", "256 tokens per text")."""
        return str(size)

    def backbone_title(self, name: str) -> str:
        """A short name for one of its models, fit for a file name."""
        return name

    def training_speed_hint(self, model) -> str:
        """What training `model` with its present freeze state costs, in one sentence ("" when unknown)."""
        return ""

    def layer_model(self, name: str, num_classes: int) -> tuple[Any, int]:
        """(model, input size) of `name` with a head for `num_classes`, built to show its layers (its
        weights do not matter); the input size is what one sample becomes (pixels a side, tokens)."""
        config = getattr(importlib.import_module("engine.training.config"), "TrainConfig")(backbone=name)
        bundle = self.training_inputs().create_bundle(config, num_classes)   # a higher layer, imported late
        return bundle.model, getattr(bundle.preprocessing, "input_size", 0)


class UnknownModality(ValueError):
    """A report, checkpoint or file names a modality nobody registered."""


def register(modality: Modality) -> Modality:
    """Make `modality` known by its name; a later registration replaces an earlier one of that name.
    Registered modalities are asked about sources and backbones before the built-in ones."""
    if not modality.name:
        raise ValueError("a modality needs a name")
    _registered[modality.name] = modality
    if modality.name in _order:
        _order.remove(modality.name)
    _order.insert(0, modality.name)
    return modality


def unregister(name: str) -> None:
    """Forget a registered modality (a test's own); a built-in one comes back on its next use."""
    _registered.pop(name, None)
    if name in _order:
        _order.remove(name)


def named(name: str | None) -> Modality:
    """The modality called `name` (None: the default, as files from before texts existed)."""
    name = name or DEFAULT
    if name not in _registered:
        if name not in _BUILT_IN:
            raise UnknownModality(f"no modality called {name!r} (known: {', '.join(names())})")
        module, attribute = _BUILT_IN[name].split(":")
        _registered[name] = getattr(importlib.import_module(module), attribute)
    return _registered[name]


def names() -> list[str]:
    return list(dict.fromkeys([*_order, *_BUILT_IN]))


def every() -> list[Modality]:
    """Every modality, in the order they are asked: registered first, then texts, then images (images
    are what a folder of anything else is scanned as)."""
    return [named(name) for name in names() if name != DEFAULT] + [named(DEFAULT)]


def of(thing: Any) -> Modality:
    """The modality of a report, a checkpoint (`.modality`), a checkpoint's metadata dict or a name."""
    if isinstance(thing, dict):
        return named(thing.get("modality"))
    if isinstance(thing, str) or thing is None:
        return named(thing)
    return named(getattr(thing, "modality", None))


def for_source(source) -> Modality:
    """The modality whose reader takes `source`; images when no other claims it."""
    if source:
        for modality in every():
            if modality.name != DEFAULT and modality.reads(os.fspath(source) if hasattr(source, "__fspath__")
                                                           else source):
                return modality
    return named(DEFAULT)


def for_backbone(name: str | None) -> Modality:
    """The modality `name` (a catalog name or a model folder) is a pretrained model of; images otherwise."""
    for modality in every():
        if modality.name != DEFAULT and modality.owns_backbone(name):
            return modality
    return named(DEFAULT)


# How a window shows one sample (`Modality.sample_view`): a picture, the text read whole, or its class only.
THUMBNAIL_VIEW, TEXT_VIEW, LABEL_VIEW = "thumbnail", "text", "label"
