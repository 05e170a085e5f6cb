"""Smaller exports: an fp16 or int8 ONNX file made from the verified fp32 export, and kept only when it
answers like it.

- int8 for images is static quantization (QDQ, per-channel int8 weights, uint8 activations calibrated with
  min/max on the run's own training images), as onnxruntime.quantization makes it. Measured on this AVX2
  CPU (bench/RESULTS.md): uint8 activations run 1.4-1.7x faster than fp32, int8 activations (no VNNI here)
  are slower than fp32, `reduce_range` and percentile calibration were no better. Texts get dynamic int8
  (weights only, activations quantized per batch at run time), the usual choice for transformers.
- fp16 halves the file; ONNX Runtime's CPU runs most fp16 operators by casting, so it is for GPUs and NPUs.
- The unknown score is never quantized (its nodes stay fp32); its k-NN bank is stored as int8 per row (a
  unit vector per row: the cosine moves by < 0.01) so that the whole file shrinks with the network. The
  smaller network's features move a little, so its unknown thresholds are fitted again on its own
  validation scores, as the run fitted the fp32 ones (the same share of validation inputs accepted).
- Verification: every validation and test sample of the run (up to MAX_EVALUATED per split) through the
  fp32 file and the smaller one: accuracy of both, top-1 agreement and agreement of the "unknown" decision,
  each at its own threshold. An accuracy drop above the gate (1 point by default), or unknown decisions that
  differ on more than 10 % of a split, refuses the smaller file: the fp32 file is written instead, with the
  measured figures in its card. Never a silent loss.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_GATE_POINTS = 1.0
UNKNOWN_AGREEMENT = 0.90          # least share of a split whose "unknown" decision must not change
CALIBRATION_SAMPLES = 512         # fewer moved the int8 accuracy by ±0.5 points between draws (bench/RESULTS.md)
CALIBRATION_BATCH = 16
MAX_EVALUATED = 1000              # per split, spread over the split
LATENCY_RUNS = {1: 20, 16: 5}     # batch size -> timed runs (after warm-up); the median is reported
SCORER_PREFIX = "scorer."         # the unknown score's tensors in an exported graph (engine.models.predictor)


@dataclass
class PrecisionCheck:
    """What the smaller file was measured to do against the fp32 file, on this machine."""

    asked: str                     # 'fp16' | 'int8'
    written: str                   # the precision of the file written: `asked`, or 'fp32' when refused
    method: str                    # how it was made
    fp32_bytes: int
    bytes: int                     # the smaller file's size (also when refused)
    splits: dict                   # split -> {samples, fp32_accuracy, accuracy, top1_agreement, unknown_agreement}
    accuracy_drop_points: float    # fp32 accuracy minus the smaller file's, over every evaluated sample
    gate_points: float
    latency_ms: dict               # {'fp32': {'batch_1': ms, 'batch_16': ms}, asked: {...}}
    calibration: str = ""          # what calibrated the activations (static int8)
    refused: str | None = None     # why the smaller file was not written
    notes: list[str] = field(default_factory=list)
    trust: dict | None = None      # the smaller file's own unknown thresholds, fitted on its validation scores

    @property
    def size_ratio(self) -> float:
        return self.bytes / self.fp32_bytes if self.fp32_bytes else float("nan")

    def to_dict(self) -> dict:
        """JSON-ready, without `trust` (the card's own "trust" holds the thresholds of the file written)."""
        found = {key: value for key, value in asdict(self).items() if key != "trust"}
        return {**found, "size_ratio": round(self.size_ratio, 4)}

    @classmethod
    def from_dict(cls, data: dict) -> "PrecisionCheck":
        return cls(**{key: value for key, value in data.items() if key != "size_ratio"})

    def summary(self) -> str:
        """One line for the terminal and the window."""
        points = self.accuracy_drop_points
        drop = f"−{points:.2f}" if points > 0 else f"+{-points:.2f}" if points < 0 else "±0"
        speed = ""
        fast, slow = self.latency_ms.get(self.asked, {}), self.latency_ms.get("fp32", {})
        if fast.get("batch_1") and slow.get("batch_1"):
            speed = (f", {fast['batch_1']:.1f} ms per sample vs {slow['batch_1']:.1f} ms "
                     f"({slow['batch_1'] / fast['batch_1']:.2f}x)")
        figures = (f"{self.asked}: {self.size_ratio:.2f}x the fp32 file, accuracy {drop} points over "
                   f"{sum(s['samples'] for s in self.splits.values())} samples{speed}")
        if self.refused:
            return f"{self.asked} refused, fp32 written instead: {self.refused} ({figures})"
        return figures


def reduce_precision(fp32_path: Path, precision: str, open_file: Callable[[Path], object],
                     labelled: dict[str, tuple[list, np.ndarray]], calibration: Sequence, calibration_note: str,
                     method: str, gate_points: float, scratch: Path, step=None) -> tuple[Path, PrecisionCheck]:
    """(the smaller file in `scratch`, its check) for the verified fp32 file `fp32_path`.

    `open_file(path)` opens an exported file the way users run it (`.inputs(samples)`, `.session`,
    `.scored(samples)`); `labelled`: split -> (samples, labels) to evaluate on; `calibration`: samples for
    static int8; `method`: 'static' or 'dynamic' for int8."""
    step = step or (lambda _name: None)
    reference = open_file(fp32_path)
    smaller = scratch / f"model-{precision}.onnx"
    step(f"make {precision}")
    if precision == "fp16":
        made_with = _to_fp16(fp32_path, smaller)
    elif method == "static":
        made_with = _to_int8_static(fp32_path, smaller, reference, calibration)
    else:
        made_with = _to_int8_dynamic(fp32_path, smaller)
    candidate = open_file(smaller)
    step(f"verify {precision}")
    outputs = {split: (_scored(reference, samples), _scored(candidate, samples))
               for split, (samples, _) in labelled.items()}
    trust = (reference.meta.get("trust") or {})
    refit = _refit_trust(trust, outputs["val"][1][1] if "val" in outputs else None)
    thresholds = (float(trust.get("threshold", np.inf)), float((refit or trust).get("threshold", np.inf)))
    splits, totals = {}, np.zeros(3)
    for split, (_, labels) in labelled.items():
        figures, counts = _compare(*outputs[split], labels, thresholds)
        splits[split] = figures
        totals += counts
    if not totals[0]:
        raise ValueError("no labelled validation or test samples to verify the smaller file on")
    drop = round(float(100 * (totals[1] - totals[2]) / totals[0]), 2)
    step(f"time {precision}")
    timing_samples = next(samples for samples, _ in labelled.values() if samples)
    latency = {"fp32": latency_ms(reference, timing_samples), precision: latency_ms(candidate, timing_samples)}
    check = PrecisionCheck(precision, precision, made_with, os.path.getsize(fp32_path), os.path.getsize(smaller),
                           splits, drop, gate_points, latency, calibration_note if method == "static" and
                           precision == "int8" else "", trust=refit)
    check.refused = _refusal(check)
    if check.refused:
        check.written = "fp32"
    return smaller, check


def _refusal(check: PrecisionCheck) -> str | None:
    if check.accuracy_drop_points > check.gate_points:
        return (f"it loses {check.accuracy_drop_points:.2f} accuracy points against the fp32 model, more than "
                f"the {check.gate_points:g}-point gate")
    for split, figures in check.splits.items():
        agreement = figures.get("unknown_agreement")
        if agreement is not None and agreement < UNKNOWN_AGREEMENT:
            return (f"its 'unknown' decision differs from the fp32 model's on {1 - agreement:.1%} of the "
                    f"{split} samples (at most {1 - UNKNOWN_AGREEMENT:.0%})")
    return None


def _refit_trust(trust: dict, val_scores: np.ndarray | None) -> dict | None:
    """The run's unknown thresholds fitted again on the smaller file's validation scores (None without)."""
    from engine.core.confidence import threshold_at, threshold_grid
    if not trust.get("thresholds") or val_scores is None or not len(val_scores):
        return None
    grid = threshold_grid(val_scores)
    return {"thresholds": grid, "threshold": threshold_at({"thresholds": grid}, float(trust.get("accept", 0.95)))}


def _compare(reference: tuple, candidate: tuple, labels: np.ndarray, thresholds: tuple[float, float]) -> tuple[dict, np.ndarray]:
    """A split's figures from both files' (logits, scores), and (samples, fp32 correct, smaller correct)."""
    (ref_logits, ref_scores), (new_logits, new_scores) = reference, candidate
    ref_top, new_top = ref_logits.argmax(1), new_logits.argmax(1)
    figures = {"samples": len(labels), "fp32_accuracy": round(float((ref_top == labels).mean()), 4),
               "accuracy": round(float((new_top == labels).mean()), 4),
               "top1_agreement": round(float((ref_top == new_top).mean()), 4)}
    if ref_scores is not None and new_scores is not None and np.isfinite(thresholds).all():
        same = (ref_scores > thresholds[0]) == (new_scores > thresholds[1])
        figures["unknown_agreement"] = round(float(same.mean()), 4)
    counts = np.array([len(labels), (ref_top == labels).sum(), (new_top == labels).sum()], dtype=float)
    return figures, counts


def _scored(classifier, samples: list, batch: int = 32) -> tuple[np.ndarray, np.ndarray | None]:
    parts = [classifier.scored(samples[i:i + batch]) for i in range(0, len(samples), batch)]
    scores = [s for _, s in parts]
    return (np.concatenate([logits for logits, _ in parts]),
            None if any(s is None for s in scores) else np.concatenate(scores))


def latency_ms(classifier, samples: list) -> dict:
    """Median milliseconds of one session run at batch 1 and batch 16 (inputs prepared beforehand)."""
    found = {}
    for size, runs in LATENCY_RUNS.items():
        batch = [samples[i % len(samples)] for i in range(size)]
        inputs = {classifier.input_name: classifier.inputs(batch)}
        for _ in range(2):
            classifier.session.run(None, inputs)
        times = []
        for _ in range(runs):
            began = time.perf_counter()
            classifier.session.run(None, inputs)
            times.append(time.perf_counter() - began)
        found[f"batch_{size}"] = round(1000 * float(np.median(times)), 2)
    return found


# -- making the smaller file -------------------------------------------------------------------------------
def scorer_nodes(model: onnx.ModelProto) -> list[str]:
    """The nodes that compute from the unknown score's own tensors (kept in fp32)."""
    tainted = {init.name for init in model.graph.initializer if init.name.startswith(SCORER_PREFIX)}
    names = []
    for node in model.graph.node:
        if any(name in tainted for name in node.input):
            names.append(node.name)
            tainted.update(node.output)
    return names


def _to_int8_static(source: Path, target: Path, reference, calibration: Sequence) -> str:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(range(0, len(calibration), CALIBRATION_BATCH))

        def get_next(self):
            start = next(self.batches, None)
            if start is None:
                return None
            return {reference.input_name: reference.inputs(list(calibration[start:start + CALIBRATION_BATCH]))}

    if not calibration:
        raise ValueError("no samples to calibrate the int8 model on")
    model = onnx.load(str(source))
    batches = -(-len(calibration) // CALIBRATION_BATCH)
    with quiet_quantizer():
        quantize_static(model, str(target), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=scorer_nodes(model),
                        extra_options={"CalibMovingAverage": True,
                                       "CalibMaxIntermediateOutputs": _held_batches(batches)})
    _tidy(model, target, int8_bank=True)
    return ("static int8 (QDQ, per-channel int8 weights, uint8 activations; ranges: moving average of each "
            "batch's min/max)")


@contextmanager
def quiet_quantizer():
    """onnxruntime's quantizer advises on the root logger ("Please consider pre-processing ..."); the
    user did not call it and cannot act on it: its records are dropped while it runs."""
    root = logging.getLogger()
    quiet = logging.Filter("__transferlab_never__")          # passes no record of the root logger
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def _held_batches(batches: int) -> int:
    """How many batches' activations the calibrator holds at once (memory: 10 batches of Lite2 photos are
    about 2 GB); onnxruntime fails when that number divides the batch count, so one that does not."""
    return next(held for held in (10, 11, 12, 13) if batches <= held or batches % held)


def _to_int8_dynamic(source: Path, target: Path) -> str:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    model = onnx.load(str(source))
    with quiet_quantizer():
        quantize_dynamic(model, str(target), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul", "Gemm", "Gather"], nodes_to_exclude=scorer_nodes(model))
    _tidy(model, target, int8_bank=True)
    return "dynamic int8 (int8 weights of MatMul, Gemm and embeddings; activations quantized per batch)"


def _to_fp16(source: Path, target: Path) -> str:
    from onnxruntime.transformers.float16 import convert_float_to_float16
    model = onnx.load(str(source))
    converted = convert_float_to_float16(model, keep_io_types=True, node_block_list=scorer_nodes(model))
    onnx.save(converted, str(target))
    _tidy(model, target, int8_bank=False)
    return "fp16 weights and arithmetic (inputs and outputs stay fp32)"


def _tidy(source: onnx.ModelProto, path: Path, int8_bank: bool) -> None:
    """The smaller file at `path` with the fp32 file's metadata (the quantizers add their own), and with
    `int8_bank` its k-NN bank in int8 (_int8_bank)."""
    model = onnx.load(str(path))
    del model.metadata_props[:]
    model.metadata_props.extend(source.metadata_props)
    if int8_bank:
        _int8_bank(model)
    onnx.save(model, str(path))


def _int8_bank(model: onnx.ModelProto) -> None:
    """Store the unknown score's large tensors (the k-NN bank: unit rows) as int8 with a scale per row,
    dequantized to fp32 in the graph; left as they are where something other than a Cast reads them."""
    readers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    for init in list(model.graph.initializer):
        values = numpy_helper.to_array(init)
        if not (init.name.startswith(SCORER_PREFIX) and values.ndim == 2 and values.size >= 4096
                and all(node.op_type == "Cast" for node in readers.get(init.name, []))):
            continue
        rows = values.astype(np.float32)
        scale = np.maximum(np.abs(rows).max(1), 1e-12) / 127.0
        quantized = np.clip(np.round(rows / scale[:, None]), -127, 127).astype(np.int8)
        model.graph.initializer.remove(init)
        for info in [info for info in model.graph.value_info if info.name == init.name]:
            model.graph.value_info.remove(info)          # it said float16; the dequantized tensor is float32
        model.graph.initializer.extend([numpy_helper.from_array(quantized, init.name + "_int8"),
                                        numpy_helper.from_array(scale.astype(np.float32), init.name + "_scale")])
        model.graph.node.insert(0, onnx.helper.make_node(
            "DequantizeLinear", [init.name + "_int8", init.name + "_scale"], [init.name], axis=0,
            name=init.name + "_dequantize"))


# -- the export of a run at a smaller precision ---------------------------------------------------------------
def export_smaller(run_or_checkpoint, onnx_path, precision: str, gate_points: float, export_fp32: Callable,
                   progress=None, control=None):
    """The verified fp32 export (`export_fp32(run, path)`, the modality's), then the smaller file made and
    verified against it; writes at `onnx_path` the smaller file, or the fp32 one when the smaller is refused
    (its card says why, with the figures). Returns the ExportResult with `precision` and `precision_check`."""
    from engine.core.control import Cancelled
    from engine.core.files import atomic_path, write_json
    from engine.outputs.export import ExportError, ExportSteps, _set_metadata, read_metadata
    from engine.outputs.predict import model_modality, resolve_checkpoint
    target = Path(onnx_path)
    if target.suffix.lower() != ".onnx":
        raise ExportError(f"the output file must end in .onnx, not {target.name!r}")
    if gate_points < 0:
        raise ExportError(f"the accuracy gate must be 0 points or more, not {gate_points:g}")
    modality = model_modality(run_or_checkpoint)
    _, run_dir = resolve_checkpoint(run_or_checkpoint)
    labelled = labelled_samples(run_dir, modality)
    if not labelled:
        raise ExportError(f"a {precision} export is verified on the run's validation and test {modality.nouns}: "
                          "export a run folder whose predictions.json lists them, and whose "
                          f"{modality.nouns} are still there")
    step = ExportSteps(progress, control)
    with tempfile.TemporaryDirectory(prefix="transferlab-precision-") as scratch:
        scratch = Path(scratch)
        fp32_file = scratch / "model.onnx"
        result = export_fp32(run_or_checkpoint, fp32_file)
        open_file = lambda path: modality.classifier(path, "onnx")                       # noqa: E731
        calibration, calibration_note = [], ""
        if precision == "int8" and modality.int8_method == "static":
            step("read calibration samples")
            calibration, calibration_note = calibration_samples(run_dir, modality, labelled)
        try:
            smaller, check = reduce_precision(fp32_file, precision, open_file, labelled, calibration,
                                              calibration_note, modality.int8_method, gate_points, scratch, step)
        except (ExportError, Cancelled):
            raise
        except Exception as exc:  # noqa: BLE001 - quantizers raise many types; the user gets one line
            from engine.core.errors import first_line
            raise ExportError(f"could not make the {precision} file: {first_line(exc)}") from None
        step("write files")
        card = read_metadata(fp32_file)
        card.update(precision=check.written, precision_check=check.to_dict())
        if check.trust and not check.refused:
            card["trust"] = {**card["trust"], **check.trust}
        written = fp32_file if check.refused else smaller
        proto = onnx.load(str(written))
        _set_metadata(proto, card)
        probe = next(samples for samples, _ in labelled.values() if samples)[:1]
        expected = open_file(written).logits(probe)
        with atomic_path(target) as tmp:
            onnx.save(proto, str(tmp))
            if not np.allclose(open_file(tmp).logits(probe), expected, rtol=0, atol=1e-5):
                raise ExportError("the written ONNX file does not reproduce the verified logits")
        write_json(target.with_suffix(".json"), {k: v for k, v in card.items() if k != "tokenizer"})
        tokenizer = fp32_file.with_suffix(".tokenizer.json")
        if tokenizer.is_file():
            from engine.core.files import write_text
            write_text(target.with_suffix(".tokenizer.json"), tokenizer.read_text(encoding="utf-8"))
    result.path, result.sidecar = str(target), str(target.with_suffix(".json"))
    result.precision, result.precision_check = check.written, check.to_dict()
    result.warnings = [*result.warnings, *check.notes]
    return result


def labelled_samples(run_dir: Path | None, modality) -> dict[str, tuple[list, np.ndarray]]:
    """split -> (samples as the exported file takes them, true class indices) for the run's validation and
    test splits (predictions.json), at most MAX_EVALUATED each, spread over the split."""
    from engine.outputs.export import read_predictions, spread
    found = {}
    predictions = read_predictions(run_dir)
    for split in ("val", "test"):
        rows = spread([row for row in predictions.get(split, []) if "true" in row], MAX_EVALUATED)
        pairs = [(modality.row_input(row), int(row["true"])) for row in rows]
        pairs = [(sample, label) for sample, label in pairs if sample is not None]
        if pairs:
            found[split] = ([sample for sample, _ in pairs], np.array([label for _, label in pairs]))
    return found


def training_rows(run_dir: Path | None) -> list[dict] | None:
    """The run's training samples as predictions rows ({path, text}), from its dataset scanned again with
    its own seed; None when the dataset is not there any more (moved, renamed, unreadable)."""
    from engine.training.datasets import scan_any
    from engine.training.runstate import load_run_config, recorded_data_path
    data = recorded_data_path(run_dir) if run_dir else None
    if not data:
        return None
    try:
        config = load_run_config(run_dir)
        report = scan_any(data, seed=config.seed, encoder=config.backbone)
    except Exception:  # noqa: BLE001 - whatever stops the scan, the caller does without
        return None
    return [{"path": s.path, "text": getattr(s, "text", None)} for s in report.split("train")]


def calibration_samples(run_dir: Path, modality, labelled: dict) -> tuple[list, str]:
    """Up to CALIBRATION_SAMPLES of the run's training samples (its dataset scanned again with its seed);
    the validation samples, said so, when the training data is not there any more."""
    from engine.outputs.export import spread
    from engine.training.runstate import recorded_data_path
    rows = training_rows(run_dir) or []
    samples = [sample for sample in (modality.row_input(row) for row in spread(rows, CALIBRATION_SAMPLES))
               if sample is not None]
    data = recorded_data_path(run_dir)
    if samples:
        return samples, f"{modality.count(len(samples))} of the run's training data"
    samples = spread(labelled.get("val", ([], None))[0], CALIBRATION_SAMPLES)
    return samples, (f"{modality.count(len(samples))} of the validation split (the training data at {data or '?'} "
                     "was not found)")
