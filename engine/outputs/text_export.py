"""Verified ONNX export of a text run: encoder + pooling + head in one graph with one input (tokens:
[batch, 2, length] int64, ids and attention mask) and one output (logits), the tokenizer embedded in the
file's metadata and written beside it (`OUT.tokenizer.json`), and a JSON sidecar (`OUT.json`).

Verification runs real texts (the run's validation split) both ways the way users run them: the checkpoint's
tokenizer + PyTorch, and `engine.outputs.textpredict.OnnxTextClassifier` (the `tokenizers` library and
onnxruntime, reading everything from the file's own metadata). Logits must agree within the tolerance and
top-1 must agree (except ties); otherwise nothing is written. The TorchScript-based exporter comes first
here: it exports the encoder in seconds with dynamic batch and length axes, where torch.export needs
minutes; the torch.export-based one is the fallback.
"""
from __future__ import annotations

import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx
import torch

from engine.core.control import RunControl
from engine.core.files import atomic_path, write_json, write_text
from engine.models.checkpoint import load_checkpoint
from engine.outputs.export import (MAX_VERIFY_IMAGES, OPSET, ExportError, ExportResult, _now, _set_metadata, _spread,
                                   _Steps, compare_logits, first_verified, provenance, validation_rows)
from engine.outputs.predict import ONNX_FORMAT, resolve_checkpoint
from engine.outputs.textpredict import OnnxTextClassifier

INPUT_NAME, OUTPUT_NAME = "tokens", "logits"
TEXT_EXPORTERS = ("legacy", "dynamo")


def export_text_run(run_or_checkpoint: str | os.PathLike, onnx_path: str | os.PathLike, *,
                    verify_texts: Sequence[str] | None = None, tolerance: float = 1e-3,
                    progress: Callable[[str, int, int], None] | None = None, exporter: str = "auto",
                    control: RunControl | None = None) -> ExportResult:
    """Export a text run folder or checkpoint to a verified `.onnx` + `OUT.json` + `OUT.tokenizer.json`."""
    started = time.monotonic()
    target = Path(onnx_path)
    if target.suffix.lower() != ".onnx":
        raise ExportError(f"the output file must end in .onnx, not {target.name!r}")
    step = _Steps(progress, control)
    step("load model")
    checkpoint_path, run_dir = resolve_checkpoint(run_or_checkpoint)
    model, checkpoint = load_checkpoint(checkpoint_path)
    if checkpoint.modality != "text":
        raise ExportError(f"{checkpoint_path.name} classifies images: export it with export_run")
    tokenizer = checkpoint.tokenizer()
    texts, notes = _verification_texts(run_dir, verify_texts)
    card = text_model_card(checkpoint.meta, run_dir)
    order = TEXT_EXPORTERS if exporter == "auto" else (exporter,)
    example = torch.from_numpy(tokenizer.encode(texts[:2]))
    with tempfile.TemporaryDirectory(prefix="transferlab-export-") as scratch:
        proto, name, verification, export_seconds = first_verified(
            order, card, Path(scratch), step, notes, lambda exporter_name, path: _run_exporter(
                exporter_name, model, example, path),
            lambda path: _verify(model, tokenizer, path, texts, tolerance))
    card.update(exporter=name, verification={
        "texts": verification.n_images, "max_abs_diff": verification.max_abs_diff,
        "top1_agreement": verification.top1_agreement, "tolerance": tolerance, "date": _now()})
    step("write files")
    _set_metadata(proto, card)
    _write_verified(proto, target, texts[0], verification.probe_logits)
    sidecar = target.with_suffix(".json")
    write_json(sidecar, {k: v for k, v in card.items() if k != "tokenizer"})
    write_text(target.with_suffix(".tokenizer.json"), tokenizer.json)
    return ExportResult(str(target), str(sidecar), name, verification.max_abs_diff, verification.top1_agreement,
                        verification.n_images, time.monotonic() - started, notes, 0.0, export_seconds, False)


def _run_exporter(name: str, model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    model.eval()
    if name == "dynamo":
        dims = {0: torch.export.Dim("batch", min=1, max=4096), 2: torch.export.Dim("length", min=2, max=8192)}
        torch.onnx.export(model, (example,), str(path), dynamo=True, external_data=False, verbose=False,
                          opset_version=OPSET, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_shapes=(dims,))
        return
    axes = {INPUT_NAME: {0: "batch", 2: "length"}, OUTPUT_NAME: {0: "batch"}}
    with warnings.catch_warnings():   # deprecation and tracer warnings: this exporter is chosen knowingly
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=False, verbose=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=axes)


def _verify(model, tokenizer, path: Path, texts: list[str], tolerance: float):
    """PyTorch on the checkpoint's tokenizer vs the torch-free classifier reading the exported file; the
    ONNX side runs the first text alone and the rest as one batch (other batch size, other length)."""
    classifier = OnnxTextClassifier(path)
    with torch.inference_mode():
        reference = model(torch.from_numpy(tokenizer.encode(texts))).float().numpy()
    first = classifier.logits(texts[:1])
    exported = np.concatenate([first] + ([classifier.logits(texts[1:])] if len(texts) > 1 else []))
    verification = compare_logits(reference, exported, tolerance)
    verification.probe_logits = first
    return verification


def _write_verified(proto: onnx.ModelProto, target: Path, probe_text: str, expected: np.ndarray) -> None:
    with atomic_path(target) as tmp:
        onnx.save(proto, str(tmp))
        if not np.array_equal(OnnxTextClassifier(tmp).logits([probe_text]), expected):
            raise ExportError("the written ONNX file does not reproduce the verified logits")


def text_model_card(meta: dict, run_dir: Path | None) -> dict:
    """What a user holding only the .onnx file needs: classes, how to tokenise (the tokenizer itself), the
    input and output, where the model came from and how it scored."""
    max_tokens = int(meta["max_tokens"])
    return {
        "format": ONNX_FORMAT,
        "modality": "text",
        "classes": list(meta["classes"]),
        "backbone": meta["backbone"],
        "arch": meta.get("arch"),
        "input": {"name": INPUT_NAME, "shape": ["batch", 2, "length"], "dtype": "int64",
                  "layout": "[:, 0] token ids, [:, 1] attention mask (1 for tokens, 0 for padding)"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", len(meta["classes"])],
                   "meaning": "logits: apply softmax for probabilities"},
        "head": meta.get("head", "linear"),
        "preprocessing": {"max_tokens": max_tokens,
                          "steps": "tokenize with the embedded tokenizer (metadata 'tokenizer', also "
                                   "OUT.tokenizer.json), truncate to max_tokens, pad to the longest text "
                                   "of the batch"},
        "tokenizer": meta["tokenizer"],
        **provenance(meta, run_dir),
    }


def _verification_texts(run_dir: Path | None, verify_texts) -> tuple[list[str], list[str]]:
    notes: list[str] = []
    if verify_texts:
        texts = [t for t in verify_texts if t and t.strip()]
    else:
        texts = _validation_texts(run_dir)
    if not texts:
        raise ExportError("no texts to verify the export on: export a run folder (its validation texts are "
                          "used) or give texts to verify on")
    return _spread(texts, MAX_VERIFY_IMAGES), notes


def _validation_texts(run_dir: Path | None) -> list[str]:
    """The run's validation (else test) texts, from predictions.json."""
    return [row["text"] for row in validation_rows(run_dir, lambda row: bool(row.get("text")))]
