"""Verified ONNX export of a text run: encoder + pooling + head in one graph with one input (tokens:
[batch, 2, length] int64, ids and attention mask) and one output (logits), the tokenizer embedded in the
file's metadata and written beside it (`OUT.tokenizer.json`), and a JSON sidecar (`OUT.json`).

Verification runs real texts (the run's validation split) both ways the way users run them: the checkpoint's
tokenizer + PyTorch, and `engine.modalities.text.predict.OnnxTextClassifier` (the `tokenizers` library and
onnxruntime, reading everything from the file's own metadata). Logits must agree within the tolerance and
top-1 must agree (except ties); otherwise nothing is written. The TorchScript-based exporter comes first
here: it exports the encoder in seconds with dynamic batch and length axes, where torch.export needs
minutes; the torch.export-based one is the fallback.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from engine.core.control import RunControl
from engine.core.files import write_text
from engine.models.checkpoint import load_checkpoint
from engine.models.predictor import trusted
from engine.outputs.export import (MAX_VERIFY_SAMPLES, OUTPUT_NAME, ExportError, ExportResult, ExportSteps,
                                   export_checked, provenance, spread, trust_card, validation_rows)
from engine.outputs.predict import ONNX_FORMAT, resolve_checkpoint
from engine.modalities.text.predict import OnnxTextClassifier
from engine.modalities.text.tokens import checkpoint_tokenizer

INPUT_NAME = "tokens"
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
    step = ExportSteps(progress, control)
    step("load model")
    checkpoint_path, run_dir = resolve_checkpoint(run_or_checkpoint)
    bare, checkpoint = load_checkpoint(checkpoint_path)
    model = trusted(bare, checkpoint)
    if checkpoint.modality != OnnxTextClassifier.modality:
        raise ExportError(f"{checkpoint_path.name} does not classify texts: export it with export_run")
    tokenizer = checkpoint_tokenizer(checkpoint.meta)
    texts, notes = _verification_texts(run_dir, verify_texts)
    card = text_model_card(checkpoint.meta, run_dir)
    order = TEXT_EXPORTERS if exporter == "auto" else (exporter,)
    result = export_checked(model, card, target, texts, exporters=order, tolerance=tolerance, step=step, notes=notes,
                            torch_inputs=lambda batch: torch.from_numpy(tokenizer.encode(list(batch))),
                            open_exported=OnnxTextClassifier, started=started, dynamic_axes={2: ("length", 2, 8192)},
                            sidecar_omits=("tokenizer",))
    write_text(target.with_suffix(".tokenizer.json"), tokenizer.json)
    return result


def text_model_card(meta: dict, run_dir: Path | None) -> dict:
    """What a user holding only the .onnx file needs: classes, how to tokenise (the tokenizer itself), the
    input and output, where the model came from and how it scored."""
    max_tokens = int(meta["max_tokens"])
    return {
        "format": ONNX_FORMAT,
        "modality": meta["modality"],
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
        **trust_card(meta),
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
    return spread(texts, MAX_VERIFY_SAMPLES), notes


def _validation_texts(run_dir: Path | None) -> list[str]:
    """The run's validation (else test) texts, from predictions.json."""
    return [row["text"] for row in validation_rows(run_dir, lambda row: bool(row.get("text")))]
