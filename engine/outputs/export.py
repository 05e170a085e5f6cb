"""Verified ONNX export: a trained run (or checkpoint) becomes one self-contained `.onnx` file that
carries everything needed to use it, and is checked against PyTorch before it is written.

Why each step is there:
- Exporter: the torch.export-based exporter (`dynamo`) is PyTorch's supported path; the TorchScript one
  (`legacy`) is deprecated but fast and mature, so it is the fallback when the first fails to export or
  to verify. With dynamic height/width the order flips: torch.export needs about two minutes to trace
  EfficientNet's 'same' padding symbolically, the TorchScript exporter seconds (and the result is
  verified at two input sizes either way). Opset 18 keeps files loadable by onnxruntime back to 1.14.
- Metadata: classes, preprocessing, backbone, training date and metrics go into the ONNX
  metadata_props (each value JSON) and into a JSON sidecar, so the `.onnx` alone is enough.
- Predictor: what is exported is what the run evaluated and `predict` runs, `predictor(model, meta)`; with
  test-time flip the mirror and the mean are inside the graph, so the file still has one input and one
  output and its users need nothing extra.
- Verification: real images (the run's validation split) go through both paths the way users run them:
  `eval_transform` + PyTorch, and `preprocess_image` + onnxruntime with the preprocessing read back from
  the file's own metadata. Logits must agree within `tolerance` and top-1 must agree (except exact ties);
  otherwise nothing is written.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from engine import __version__
from engine.core import modality as modalities
from engine.core.control import RunControl
from engine.core.errors import first_line
from engine.core.files import atomic_path, write_json
from engine.core.paths import demo_dataset
from engine.core.runfolder import RunFolder
from engine.data.images import ImageError, load_image
from engine.data.preprocessing import Preprocessing
from engine.data.transforms import eval_transform
from engine.models.checkpoint import load_checkpoint
from engine.models.predictor import trusted
from engine.outputs.predict import (ONNX_FORMAT, OnnxClassifier, collect_images, onnx_outputs, output_arrays,
                                    preprocess_image, read_onnx_metadata, resolve_checkpoint, scored_outputs)

EXPORTERS = ("dynamo", "legacy")
OPSET = 18
INPUT_NAME, OUTPUT_NAME = "input", "logits"
MAX_VERIFY_SAMPLES = 32
SCORE_TOLERANCE = 1e-2      # max |unknown score difference|, in the score's own standardised units
_SIZE_PROBE_STEP = 32                       # a second input size tried when dynamic height/width is asked


class ExportError(ValueError):
    """The model could not be exported, or the exported file does not behave like the trained model."""


@dataclass
class ExportResult:
    path: str
    sidecar: str
    exporter: str                   # 'dynamo' | 'legacy'
    max_abs_diff: float             # max |logit(PyTorch) - logit(onnxruntime)| over the verification images
    top1_agreement: float           # fraction of verification images with the same top-1 class
    n_samples: int                  # the verification images (texts, ...) each format ran
    seconds: float                  # the whole call
    warnings: list[str] = field(default_factory=list)
    max_input_diff: float = 0.0     # numpy preprocessing vs eval_transform, on the same images
    export_seconds: float = 0.0     # the exporter alone, for the one that succeeded
    dynamic_size: bool = False      # True when height and width are dynamic axes, not only batch
    max_score_diff: float | None = None   # max |unknown score(PyTorch) - score(onnxruntime)|; None: no score
    precision: str = "fp32"         # of the file written (engine.outputs.precision)
    precision_check: dict | None = None   # a smaller precision's measured figures against fp32, when asked
    openvino: dict | None = None    # an OpenVINO IR's verification against its ONNX source (engine.outputs.openvino)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Verification:
    max_abs_diff: float
    max_input_diff: float
    top1_agreement: float
    n_samples: int
    ties: int
    problem: str | None             # why the export must be rejected; None when it passed
    probe_logits: np.ndarray | None = None   # onnxruntime's logits for the first image
    max_score_diff: float | None = None      # max |unknown score difference| (None: the model has no score)


def export_run(run_or_checkpoint: str | os.PathLike, onnx_path: str | os.PathLike, *,
               verify_images: Sequence[str | os.PathLike] | None = None, tolerance: float = 1e-3,
               progress: Callable[[str, int, int], None] | None = None, exporter: str = "auto",
               dynamic_size: bool = False, control: RunControl | None = None) -> ExportResult:
    """Export a run folder or checkpoint to a verified ONNX file plus a JSON sidecar (`OUT.json`).

    Safe to call on a worker thread; files are written atomically and nothing is left behind when
    verification fails.

    Args:
        run_or_checkpoint: a run folder (with model.safetensors) or a TransferLab `.safetensors` file.
        onnx_path: where to write; must end in `.onnx`.
        verify_images: image files or folders to verify on; default: the run's validation images,
            else the bundled demo images (with a warning).
        tolerance: largest accepted |logit difference| between PyTorch and onnxruntime.
        progress: `progress(step, done, total)` after each of the steps.
        exporter: 'auto' (dynamo, falling back to legacy; the reverse with dynamic_size), 'dynamo' or
            'legacy'.
        dynamic_size: make height and width dynamic too (for architectures that allow it).
        control: cancelled between steps (an exporter call itself runs to its end); nothing is written.

    Raises:
        ExportError: bad output path, no usable images, or every exporter failed or disagreed.
        Cancelled: `control` was cancelled.
        ModelFileError, CheckpointError: the input is not a run folder or checkpoint.
    """
    started = time.monotonic()
    target = Path(onnx_path)
    if target.suffix.lower() != ".onnx":
        raise ExportError(f"the output file must end in .onnx, not {target.name!r}")
    if exporter not in ("auto", *EXPORTERS):
        raise ExportError(f"exporter must be auto, {' or '.join(EXPORTERS)}, not {exporter!r}")
    step = ExportSteps(progress, control)
    step("load model")
    checkpoint_path, run_dir = resolve_checkpoint(run_or_checkpoint)
    bare, checkpoint = load_checkpoint(checkpoint_path)
    model = trusted(bare, checkpoint)
    pre = checkpoint.preprocessing
    images, notes = _verification_samples(run_dir, verify_images)
    if dynamic_size and not accepts_other_sizes(model, pre):
        notes.append(f"{checkpoint.meta['backbone']} cannot run at other input sizes: exported with a fixed "
                     f"{pre.input_size}×{pre.input_size} input")
        dynamic_size = False
    card = {**model_card(checkpoint.meta, run_dir, dynamic_size), **trust_card(checkpoint.meta)}

    with tempfile.TemporaryDirectory(prefix="transferlab-export-") as scratch:
        proto, used, verification, export_seconds = _export_verified(
            model, pre, card, images, tolerance, dynamic_size, exporter, Path(scratch), step, notes)
    card.update(exporter=used, verification=verification_record(card, verification, tolerance))
    step("write files")
    _set_metadata(proto, card)
    _write_onnx(proto, target, images[0], verification.probe_logits)
    sidecar = target.with_suffix(".json")
    write_json(sidecar, card)
    return ExportResult(str(target), str(sidecar), used, verification.max_abs_diff, verification.top1_agreement,
                        verification.n_samples, time.monotonic() - started, notes, verification.max_input_diff,
                        export_seconds, dynamic_size, verification.max_score_diff)


def verification_record(card: dict, verification: "_Verification", tolerance: float) -> dict:
    """The model card's "verification": what was compared, on how many samples, with what result."""
    record = {modalities.of(card).nouns: verification.n_samples, "max_abs_diff": verification.max_abs_diff,
              "top1_agreement": verification.top1_agreement, "tolerance": tolerance, "date": _now()}
    if verification.max_score_diff is not None:
        record.update(max_score_diff=verification.max_score_diff, score_tolerance=SCORE_TOLERANCE)
    return record


def export_model(run_or_checkpoint: str | os.PathLike, onnx_path: str | os.PathLike, *, precision: str = "fp32",
                 gate_points: float | None = None, **options) -> ExportResult:
    """A verified ONNX file of any run: the modality its checkpoint names exports it (`options`: that
    modality's, such as `verify`, `tolerance`, `exporter`, `dynamic_size`, `progress`, `control`).
    `precision` fp16 or int8: the fp32 file is made and verified first, then the smaller one is kept only
    when it loses at most `gate_points` accuracy points against it (engine.outputs.precision)."""
    from engine.outputs import precision as smaller
    from engine.outputs.predict import model_modality
    if precision not in smaller.PRECISIONS:
        raise ExportError(f"precision must be {', '.join(smaller.PRECISIONS)}, not {precision!r}")
    modality = model_modality(run_or_checkpoint)
    if precision == "fp32":
        return modality.export(run_or_checkpoint, onnx_path, **options)
    gate = smaller.DEFAULT_GATE_POINTS if gate_points is None else gate_points
    return smaller.export_smaller(run_or_checkpoint, onnx_path, precision, gate,
                                  lambda run, path: modality.export(run, path, **options),
                                  options.get("progress"), options.get("control"))


def export_checked(model: torch.nn.Module, card: dict, target: Path, samples: Sequence, *,
                   torch_inputs: Callable[[Sequence], torch.Tensor], open_exported: Callable[[Path], object],
                   exporters: Sequence[str], tolerance: float, step, notes: list[str], started: float,
                   dynamic_axes: dict[int, tuple[str, int, int]] | None = None, sidecar_omits: Sequence[str] = ()) -> ExportResult:
    """The verified export every modality but images uses (images add preprocessing twins and sizes):
    each exporter in turn until one's file, run the way users run it (`open_exported(path).logits(samples)`,
    from the file's own metadata), gives PyTorch's logits on `torch_inputs(samples)` within `tolerance`
    with the same top-1; then the file (the card in its metadata) and its JSON sidecar, written atomically.

    `dynamic_axes`: the input's axes besides the batch that vary (texts: {2: ("length", 2, 8192)}).
    """
    example = torch_inputs(samples[:2])
    input_name = card["input"]["name"]
    with tempfile.TemporaryDirectory(prefix="transferlab-export-") as scratch:
        proto, used, verification, export_seconds = first_verified(
            exporters, card, Path(scratch), step, notes,
            lambda name, path: run_exporter(name, model, example, path, input_name, dynamic_axes or {}),
            lambda path: verify_exported(model, open_exported(path), samples, torch_inputs, tolerance))
    card.update(exporter=used, verification=verification_record(card, verification, tolerance))
    step("write files")
    _set_metadata(proto, card)
    with atomic_path(target) as tmp:
        onnx.save(proto, str(tmp))
        if not np.array_equal(open_exported(tmp).logits(samples[:1]), verification.probe_logits):
            raise ExportError("the written ONNX file does not reproduce the verified logits")
    sidecar = target.with_suffix(".json")
    write_json(sidecar, {k: v for k, v in card.items() if k not in sidecar_omits})
    return ExportResult(str(target), str(sidecar), used, verification.max_abs_diff, verification.top1_agreement,
                        verification.n_samples, time.monotonic() - started, notes, 0.0, export_seconds, False,
                        verification.max_score_diff)


def run_exporter(name: str, model: torch.nn.Module, example: torch.Tensor, path: Path, input_name: str,
                 dynamic_axes: dict[int, tuple[str, int, int]], ignored: type[Warning] = Warning) -> None:
    """One exporter ('dynamo' or 'legacy') on a model with one input: its batch axis free, and each of
    `dynamic_axes` ({axis: (name, smallest, largest)}). The legacy exporter's `ignored` warnings are not
    shown: it is chosen knowingly (deprecated; tracer warnings on shapes the verification checks)."""
    model.eval()
    outputs = list(getattr(model, "outputs", (OUTPUT_NAME,)))
    if name == "dynamo":
        dims = {0: torch.export.Dim("batch", min=1, max=4096),
                **{axis: torch.export.Dim(label, min=low, max=high)
                   for axis, (label, low, high) in dynamic_axes.items()}}
        from tqdm import tqdm

        from engine.core.runtime import TRACING
        tqdm.monitor_interval = 0       # torch.export's interpreter opens a tqdm bar, whose monitor thread would
        with TRACING:                   # outlive the export (and a closed window); TRACING: see there
            torch.onnx.export(model, (example,), str(path), dynamo=True, external_data=False, verbose=False,
                              opset_version=OPSET, input_names=[input_name], output_names=outputs,
                              dynamic_shapes=(dims,))
        return
    axes = {input_name: {0: "batch", **{axis: label for axis, (label, _, _) in dynamic_axes.items()}},
            **{output: {0: "batch"} for output in outputs}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ignored)
        torch.onnx.export(model, (example,), str(path), dynamo=False, verbose=False, opset_version=OPSET,
                          input_names=[input_name], output_names=outputs, dynamic_axes=axes)


def verify_exported(model: torch.nn.Module, exported_classifier, samples: Sequence,
                    torch_inputs: Callable[[Sequence], torch.Tensor], tolerance: float) -> _Verification:
    """PyTorch on `torch_inputs(samples)` against the exported file's own classifier; the ONNX side runs
    the first sample alone and the rest as one batch (another batch size, another length)."""
    with torch.inference_mode():
        reference, reference_scores = output_arrays(model(torch_inputs(samples)))
    parts = [scored_outputs(exported_classifier, samples[:1])] + (
        [scored_outputs(exported_classifier, samples[1:])] if len(samples) > 1 else [])
    verification = compare_logits(reference, np.concatenate([logits for logits, _ in parts]), tolerance)
    compare_scores(verification, reference_scores, [scores for _, scores in parts])
    verification.probe_logits = parts[0][0]
    return verification


def compare_scores(verification: "_Verification", reference: np.ndarray | None, exported: list) -> None:
    """Add the unknown score's agreement to `verification`: the same score within SCORE_TOLERANCE, or a
    problem (a file that turns other inputs away than the run measured is not the run's model)."""
    if reference is None:
        return
    if any(part is None for part in exported):
        verification.problem = verification.problem or "the exported file has no unknown score"
        return
    diff = float(np.abs(reference - np.concatenate(exported)).max())
    verification.max_score_diff = diff
    if not np.isfinite(diff) or diff > SCORE_TOLERANCE:
        verification.problem = verification.problem or (
            f"max |unknown score difference| {diff:.3g} exceeds {SCORE_TOLERANCE:g}")


def _export_verified(model, pre, card, images, tolerance, dynamic_size, exporter, scratch: Path, step, notes):
    """Try each exporter in turn; return (proto, exporter, verification, seconds) for the first that passes."""
    found = first_verified(
        _exporter_order(exporter, dynamic_size), card, scratch, step, notes,
        lambda name, path: _run_exporter(name, model, pre.input_size, path, dynamic_size),
        lambda path: verify_onnx(model, pre, path, images, tolerance, dynamic_size))
    if found[2].ties:
        notes.append(f"{found[2].ties} verification image(s) are ties between two classes within "
                     "floating-point precision (top-1 may differ there by rounding)")
    return found


def first_verified(order: Sequence[str], card: dict, scratch: Path, step, notes: list[str],
                   export: Callable[[str, Path], None], verify: Callable[[Path], "_Verification"]):
    """(proto, exporter, verification, export seconds) of the first exporter in `order` whose file onnx
    accepts and `verify` passes (the card is in its metadata, as users will read it); the others' failures
    go to `notes`. ExportError with every failure when none passes."""
    failures = []
    for name in order:
        step(f"export ({name})")
        path = scratch / f"{name}.onnx"
        began = time.monotonic()
        try:
            export(name, path)
            proto = onnx.load(str(path))
            onnx.checker.check_model(proto)
        except Exception as exc:  # noqa: BLE001 - any exporter failure means "try the next one"
            failures.append(f"{name} exporter failed: {first_line(exc)}")
            continue
        seconds = time.monotonic() - began
        _set_metadata(proto, {**card, "exporter": name})
        onnx.save(proto, str(path))
        step(f"verify ({name})")
        try:
            verification = verify(path)
        except Exception as exc:  # noqa: BLE001 - e.g. an operator onnxruntime lacks: try the next one
            failures.append(f"onnxruntime cannot run the {name} export: {first_line(exc)}")
            continue
        if verification.problem is None:
            notes.extend(failures)
            return proto, name, verification, seconds
        failures.append(f"{name} export failed verification: {verification.problem}")
    raise ExportError("; ".join(failures))


def _exporter_order(exporter: str, dynamic_size: bool) -> tuple[str, ...]:
    if exporter != "auto":
        return (exporter,)
    return tuple(reversed(EXPORTERS)) if dynamic_size else EXPORTERS


def _run_exporter(name: str, model: torch.nn.Module, size: int, path: Path, dynamic_size: bool) -> None:
    example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    sides = {2: ("height", 32, 2048), 3: ("width", 32, 2048)} if dynamic_size else {}
    run_exporter(name, model, example, path, INPUT_NAME, sides, ignored=DeprecationWarning)


def verify_onnx(model: torch.nn.Module, pre: Preprocessing, onnx_path: str | os.PathLike,
                images: Sequence[Image.Image], tolerance: float = 1e-3, dynamic_size: bool = False) -> _Verification:
    """Compare PyTorch (eval_transform) with onnxruntime (numpy preprocessing from the file's metadata).

    The ONNX side runs the first image alone and the rest as one batch, so the dynamic batch axis is
    exercised too; with `dynamic_size` a second input size is checked as well.
    """
    classifier = OnnxClassifier(onnx_path)
    sizes = [pre.input_size] + ([pre.input_size + _SIZE_PROBE_STEP] if dynamic_size else [])
    reference, exported, input_diff = [], [], 0.0
    reference_scores, exported_scores = [], []
    for size in sizes:
        sized = pre.with_size(size)
        torch_inputs = torch.stack([eval_transform(sized)(image) for image in images])
        onnx_inputs = np.stack([preprocess_image(image, {**classifier.preprocessing, "input_size": size})
                                for image in images])
        input_diff = max(input_diff, float(np.abs(torch_inputs.numpy() - onnx_inputs).max()))
        with torch.inference_mode():
            logits, scores = output_arrays(model(torch_inputs))
        reference.append(logits)
        reference_scores.append(scores)
        parts = [onnx_outputs(classifier.session.run(None, {classifier.input_name: batch}))
                 for batch in ([onnx_inputs[:1]] + ([onnx_inputs[1:]] if len(images) > 1 else []))]
        exported.append(np.concatenate([part[0] for part in parts]))
        exported_scores.extend(part[1] for part in parts)
    result = compare_logits(np.concatenate(reference), np.concatenate(exported), tolerance, input_diff)
    if reference_scores[0] is not None:
        compare_scores(result, np.concatenate(reference_scores), exported_scores)
    result.probe_logits = exported[0][:1]
    return result


def compare_logits(reference: np.ndarray, exported: np.ndarray, tolerance: float,
                   input_diff: float = 0.0) -> _Verification:
    """Max |difference| and top-1 agreement; a top-1 disagreement only passes when PyTorch's own two
    candidates are closer than the observed difference (a tie that rounding can flip)."""
    if reference.shape != exported.shape:
        return _Verification(float("inf"), input_diff, 0.0, len(reference), 0,
                             f"output shape {exported.shape} differs from PyTorch's {reference.shape}")
    diff = float(np.abs(reference - exported).max())
    top_ref, top_exp = reference.argmax(1), exported.argmax(1)
    rows = np.flatnonzero(top_ref != top_exp)
    gaps = reference[rows, top_ref[rows]] - reference[rows, top_exp[rows]]
    ties = int((gaps <= 2 * diff).sum())
    agreement = float((top_ref == top_exp).mean())
    problem = None
    if not np.isfinite(diff) or diff > tolerance:
        problem = f"max |logit difference| {diff:.3g} exceeds the tolerance {tolerance:g}"
    elif len(rows) > ties:
        problem = f"top-1 agreement {agreement:.1%} (the classes differ on {len(rows) - ties} image(s))"
    return _Verification(diff, input_diff, agreement, len(reference), ties, problem)


def accepts_other_sizes(model: torch.nn.Module, pre: Preprocessing) -> bool:
    """Whether the architecture runs at an input size other than its training size (ViTs do not)."""
    size = pre.input_size + _SIZE_PROBE_STEP
    try:
        with torch.inference_mode():
            logits, _ = output_arrays(model(torch.zeros(1, 3, size, size - _SIZE_PROBE_STEP // 2)))
    except Exception:  # noqa: BLE001 - any failure means "fixed size"
        return False
    return logits.ndim == 2 and logits.shape[0] == 1


# -- metadata -----------------------------------------------------------------------------------------
def model_card(meta: dict, run_dir: Path | None, dynamic_size: bool) -> dict:
    """What a user holding only the .onnx file needs: embedded as metadata and written as the sidecar."""
    pre = Preprocessing.from_dict(meta["preprocessing"])
    height = width = pre.input_size
    if dynamic_size:
        height, width = "height", "width"
    from engine.models.ensemble import describe_members, is_ensemble
    ensemble = {"ensemble": meta["ensemble"]} if is_ensemble(meta) else {}
    return {
        "format": ONNX_FORMAT,
        "modality": modalities.of(meta).name,
        "classes": list(meta["classes"]),
        "backbone": meta["backbone"],
        "arch": meta.get("arch"),
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, height, width], "dtype": "float32",
                  "layout": "NCHW, RGB"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", len(meta["classes"])],
                   "meaning": "logits: apply softmax for probabilities" + (
                       "; already the mean over the image and its mirror image (test-time flip)"
                       if meta.get("tta", "none") == "flip" else "") + (
                       f"; the log of {describe_members(meta)}" if ensemble else "")},
        "head": meta.get("head", "linear"),
        "tta": meta.get("tta", "none"),
        **ensemble,
        "preprocessing": {**pre.to_dict(), "resize_size": pre.resize_size,
                          "steps": "RGB (EXIF-upright, transparency on white); resize the shorter side to "
                                   "resize_size with `interpolation`; centre-crop input_size x input_size; "
                                   "scale to 0..1; subtract mean, divide by std (per channel)"},
        **provenance(meta, run_dir),
    }


def trust_card(meta: dict) -> dict:
    """The graph's outputs and, for a calibrated run, its temperature and unknown score: what any ONNX
    consumer needs to say "unknown" as TransferLab does (score above `trust.threshold`). For the card of
    a graph exported from `engine.models.predictor.trusted`."""
    trust = meta.get("trust") or {}
    if not trust.get("method"):
        return {}
    keep = ("temperature", "method", "accept", "threshold", "thresholds", "fitted_on")
    return {"outputs": {"logits": "calibrated logits (the model's, divided by trust.temperature)",
                        "probabilities": "softmax of the calibrated logits",
                        "ood_score": "higher: less like the training data; above trust.threshold the input is "
                                     "unlike anything the model was taught ('unknown'); trust.thresholds[i] "
                                     "accepts 0.5 + 0.005 i of the validation inputs"},
            "trust": {key: trust[key] for key in keep if key in trust}}


def provenance(meta: dict, run_dir: Path | None) -> dict:
    """Where an exported model came from and how it scored: the part of the model card images and texts share."""
    return {
        "trained": meta.get("created"),
        "metrics": _metrics(meta, run_dir),
        "weights_origin": meta.get("weights_origin"),
        "exported": _now(),
        "precision": "fp32",
        "opset": OPSET,
        "versions": {"transferlab": __version__, "torch": torch.__version__, "onnx": onnx.__version__},
    }


def _metrics(meta: dict, run_dir: Path | None) -> dict:
    found = {"epoch": meta.get("epoch"), "val_accuracy": meta.get("val_accuracy")}
    metrics_file = RunFolder(run_dir).metrics if run_dir else None
    if metrics_file and metrics_file.is_file():
        try:
            saved = json.loads(metrics_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return found
        for key in ("val_accuracy", "test_accuracy", "evaluated_on"):
            if saved.get(key) is not None:
                found[key] = saved[key]
    return found


def read_metadata(onnx_path: str | os.PathLike) -> dict:
    """The model card embedded in an exported file (without loading its weights into a session)."""
    proto = onnx.load(str(onnx_path), load_external_data=False)
    return read_onnx_metadata({p.key: p.value for p in proto.metadata_props}, Path(onnx_path).name)


def _set_metadata(proto: onnx.ModelProto, card: dict) -> None:
    keep = [p for p in proto.metadata_props if p.key not in card]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in card.items():
        proto.metadata_props.add(key=key, value=json.dumps(value, ensure_ascii=False))
    proto.producer_name, proto.producer_version = "TransferLab", __version__
    proto.doc_string = (f"{card['backbone']} classifier for {len(card['classes'])} classes, exported by "
                        "TransferLab; metadata_props hold classes and preprocessing (values are JSON).")


def _write_onnx(proto: onnx.ModelProto, target: Path, probe_image: Image.Image, expected: np.ndarray) -> None:
    """Write atomically, after re-opening the written bytes: metadata must parse and the logits must be
    the ones that were verified (the final write only changed metadata)."""
    with atomic_path(target) as tmp:
        onnx.save(proto, str(tmp))
        if not np.array_equal(OnnxClassifier(tmp).logits([probe_image]), expected):
            raise ExportError("the written ONNX file does not reproduce the verified logits")


# -- verification images ------------------------------------------------------------------------------
def _verification_samples(run_dir: Path | None, verify_images) -> tuple[list[Image.Image], list[str]]:
    notes = []
    if verify_images is not None:
        paths, _ = collect_images(verify_images)
    else:
        paths = _validation_paths(run_dir)
        if not paths:
            paths, _ = collect_images([demo_dataset()])
            notes.append("no validation images found for this model: verified on the bundled demo images")
    paths = spread(paths, MAX_VERIFY_SAMPLES)
    images, unusable = [], 0
    for path in paths:
        try:
            images.append(load_image(path))
        except ImageError:
            unusable += 1
    if unusable:
        notes.append(f"{unusable} verification image(s) could not be read and were skipped")
    if not images:
        raise ExportError("no usable images to verify the export on")
    return images, notes


def _validation_paths(run_dir: Path | None) -> list[str]:
    """The run's validation (else test) image paths that still exist, from predictions.json."""
    return [row["path"] for row in validation_rows(run_dir, lambda row: os.path.isfile(row.get("path", "")))]


def validation_rows(run_dir: Path | None, usable: Callable[[dict], bool]) -> list[dict]:
    """The `usable` rows of the run's predictions.json for its validation split, else its test split ([]
    without a run folder or a readable file)."""
    predictions = read_predictions(run_dir)
    for split in ("val", "test"):
        rows = [row for row in predictions.get(split, []) if usable(row)]
        if rows:
            return rows
    return []


def read_predictions(run_dir: Path | None) -> dict:
    """The run's predictions.json ({split: rows}); {} without a run folder or a readable file."""
    if run_dir is None or not RunFolder(run_dir).predictions.is_file():
        return {}
    try:
        predictions = json.loads(RunFolder(run_dir).predictions.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return predictions if isinstance(predictions, dict) else {}


def spread(paths: list, limit: int) -> list:
    """At most `limit` items spread evenly over the list (which is grouped by class)."""
    if len(paths) <= limit:
        return list(paths)
    return [paths[int(i * len(paths) / limit)] for i in range(limit)]


# -- weights for PyTorch users --------------------------------------------------------------------------
def export_weights(run_or_checkpoint: str | os.PathLike, out_path: str | os.PathLike) -> str:
    """A plain `.safetensors` state dict for timm users, with flat string metadata (arch, num_classes,
    classes, preprocessing as JSON, head, tta). Checked by rebuilding the timm model from it strictly.
    With head 'mlp' the classifier is `engine.models.heads.MlpHead`; with tta 'flip' the run's predictions
    are the mean of the logits of each image and its mirror image."""
    out = Path(out_path)
    if out.suffix.lower() != ".safetensors":
        raise ExportError(f"the weights file must end in .safetensors, not {out.name!r}")
    checkpoint_path, _ = resolve_checkpoint(run_or_checkpoint)
    model, checkpoint = load_checkpoint(checkpoint_path)
    meta = checkpoint.meta
    if meta.get("ensemble"):
        raise ExportError("this model is an ensemble of several networks, which a timm state dict cannot "
                          "hold: export it as ONNX (one file, the whole ensemble inside)")
    flat = {"arch": meta["arch"], "num_classes": str(len(meta["classes"])),
            "classes": json.dumps(meta["classes"]), "preprocessing": json.dumps(meta["preprocessing"]),
            "backbone": meta["backbone"], "trained": str(meta.get("created", "")),
            "head": meta.get("head", "linear"), "tta": meta.get("tta", "none"), "modality": checkpoint.modality}
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out) as tmp:
        save_file(state, str(tmp), metadata=flat)
        rebuilt = modalities.of(meta).build_from_meta(meta, flat["head"])
        rebuilt.load_state_dict(load_file(str(tmp)), strict=True)
    return str(out)


# -- helpers ------------------------------------------------------------------------------------------
class ExportSteps:
    """Numbers the steps for `progress(step, done, total)`; total is an estimate (a fallback adds two).
    Each step begins with the cancel check, and none begins inside a file write."""

    TOTAL = 4

    def __init__(self, progress, control: RunControl | None = None):
        self.progress, self.control, self.done = progress, control, 0

    def __call__(self, name: str) -> None:
        if self.control is not None:
            self.control.checkpoint()
        if self.progress:
            self.progress(name, self.done, max(self.TOTAL, self.done + 1))
        self.done += 1


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
