"""Predictions on new texts from a text run folder, its checkpoint or an exported `.onnx` file.

`OnnxTextClassifier` needs only onnxruntime, numpy and the `tokenizers` library: the tokenizer travels
inside the exported file's metadata (and beside it as `OUT.tokenizer.json`), so `predict model.onnx "some
text"` never imports torch. `TorchTextClassifier` runs a checkpoint with the tokenizer its metadata holds.
Both return logits for a list of texts; `predict_texts` turns them into the same `Prediction` records the
image path writes (the "path" being the text's origin: the command line, `FILE:line N`, `FILE:row N`).
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from engine.core.control import RunControl
from engine.modalities.text.tokens import TextTokenizer, checkpoint_tokenizer
from engine.outputs.predict import (onnx_outputs, torch_outputs, ModelFileError, PredictionReport, SampleError, model_modality, open_onnx,
                                    predict_items, refuse_other_modality)

TEXT_BATCH = 32


class TextClassifierBase:
    modality = "text"


class OnnxTextClassifier(TextClassifierBase):
    """An exported text model run with onnxruntime; classes and tokenizer come from its metadata."""

    kind = "onnx"

    def __init__(self, onnx_path: str | os.PathLike):
        self.path = str(onnx_path)
        self.session, self.meta = open_onnx(self.path)
        refuse_other_modality(self.path, self.meta, self.modality)
        self.classes = list(self.meta["classes"])
        self.tokens = TextTokenizer(self.meta["tokenizer"], int(self.meta["preprocessing"]["max_tokens"]))
        self.input_name = self.session.get_inputs()[0].name

    def inputs(self, texts: list[str]) -> np.ndarray:
        return self.tokens.encode(texts)

    def logits(self, texts: list[str]) -> np.ndarray:
        return self.scored(texts)[0]

    def scored(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """(calibrated logits, unknown scores or None) of `texts`."""
        return onnx_outputs(self.session.run(None, {self.input_name: self.inputs(texts)}))


class TorchTextClassifier(TextClassifierBase):
    """A text checkpoint run in PyTorch with the tokenizer its metadata carries."""

    kind = "torch"

    def __init__(self, checkpoint_path: str | os.PathLike, device: str = "cpu"):
        from engine.core.device import resolve_device
        from engine.models.checkpoint import load_checkpoint
        self.path = str(checkpoint_path)
        self.device = resolve_device(device)
        from engine.models.predictor import trusted
        model, checkpoint = load_checkpoint(checkpoint_path)
        refuse_other_modality(self.path, checkpoint.meta, self.modality)
        model = trusted(model, checkpoint)
        self.model = model.to(self.device) if self.device.type != "cpu" else model
        self.meta = checkpoint.meta
        self.classes = checkpoint.classes
        self.tokenizer = checkpoint_tokenizer(checkpoint.meta)

    def logits(self, texts: list[str]) -> np.ndarray:
        return self.scored(texts)[0]

    def scored(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """(calibrated logits, unknown scores or None) of `texts`."""
        import torch
        return torch_outputs(self.model, torch.from_numpy(self.tokenizer.encode(texts)), self.device)


def is_text_model(path: str | os.PathLike) -> bool:
    """Whether a run folder, checkpoint or .onnx file holds a text classifier (reads metadata only)."""
    return model_modality(path).name == TextClassifierBase.modality


def read_text_inputs(texts: Iterable[str] = (), text_file: str | os.PathLike | None = None,
                     csv_file: str | os.PathLike | None = None, column: str | None = None) -> list[tuple[str, str]]:
    """(origin, text) pairs: texts given as they are ("arg 1"), a text file's non-empty lines
    ("FILE:line N"), a CSV's text column ("FILE:row N"; `column` or a column named text/sentence/...,
    else the first)."""
    items = [(f"arg {i}", text) for i, text in enumerate(texts, start=1)]
    if text_file:
        lines = _read_lines(Path(text_file))
        items += [(f"{Path(text_file).name}:line {n}", line) for n, line in lines]
    if csv_file:
        items += _csv_texts(Path(csv_file), column)
    return items


def _read_lines(path: Path) -> list[tuple[int, str]]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    text = raw.decode("utf-8-sig", errors="replace")
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


_TEXT_COLUMNS = ("text", "sentence", "content", "body", "review", "message", "comment", "document")


def _csv_texts(path: Path, column: str | None) -> list[tuple[str, str]]:
    try:
        text = path.read_bytes().decode("utf-8-sig", errors="replace")
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    rows = list(csv.reader(text.splitlines(), delimiter=delimiter))
    if not rows:
        return []
    header = [cell.strip().lower() for cell in rows[0]]
    if column is not None:
        if column.lower() not in header:
            raise ModelFileError(f"{path.name} has no column {column!r} (columns: {', '.join(rows[0])})")
        index = header.index(column.lower())
    else:
        index = next((header.index(name) for name in _TEXT_COLUMNS if name in header), 0)
    return [(f"{path.name}:row {n}", row[index].strip()) for n, row in enumerate(rows[1:], start=2)
            if index < len(row) and row[index].strip()]


def predict_texts(classifier, items: list[tuple[str, str]], *, top_k: int = 5, threshold: float = 0.0,
                  accept: float | None = None, batch_size: int = TEXT_BATCH, progress: Callable[[str, int, int], None] | None = None,
                  control: RunControl | None = None) -> PredictionReport:
    """Top-k labels with probabilities for each (origin, text); empty texts are listed as skipped."""
    return predict_items(classifier, items, read_text_input, top_k=top_k, threshold=threshold, accept=accept,
                         batch_size=batch_size, progress=progress, control=control)


def read_text_input(text: str) -> str:
    if not text or not text.strip():
        raise SampleError("empty text")
    return text
