"""Predictions on new images from a run folder, a `.safetensors` checkpoint or an exported `.onnx` file.

Two classifiers share one interface (`logits(images)`): `TorchClassifier` preprocesses with
`engine.data.transforms.eval_transform`, exactly as validation did during training; `OnnxClassifier` uses
`preprocess_image`, its numpy/Pillow twin, and onnxruntime. Tests keep the two preprocessing paths equal
to the float, and the ONNX path imports neither torch nor timm, so `predict model.onnx ...` starts fast.
`examples/onnx_predict.py` is the same ONNX path as one standalone file for users' own applications.

Model files are never unpickled: checkpoints are read with safetensors, and pickled PyTorch files are
refused by name before anything parses them.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image

from engine.core import modality as modalities
from engine.core.control import RunControl
from engine.core.modality import Modality
from engine.core.errors import first_line
from engine.core.runfolder import CHECKPOINT, RunFolder
from engine.data.images import ImageError, has_image_extension, is_hidden_or_system, load_image

ONNX_FORMAT = "transferlab-onnx/1"
UNKNOWN = "unknown"

_PIL_FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}
_PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")     # pickle protocol 2+; torch.save's zip container


class ModelFileError(ValueError):
    """The path is not a model TransferLab can run: not a run folder, checkpoint or exported ONNX file."""


# -- preprocessing ------------------------------------------------------------------------------------
def preprocess_image(image: Image.Image, preprocessing) -> np.ndarray:
    """An RGB image as the (3, H, W) float32 array the model expects: the numpy twin of
    `engine.data.transforms.eval_transform` (shorter side to round(input_size / crop_pct), centre crop, scale to
    0..1, normalise), following torchvision's size and rounding rules so both give the same numbers.

    Args:
        image: an 8-bit RGB image, as `engine.data.images.load_image` returns.
        preprocessing: a `Preprocessing` or its dict (input_size, mean, std, interpolation, crop_pct).
    """
    pre = preprocessing if isinstance(preprocessing, dict) else preprocessing.to_dict()
    size = int(pre["input_size"])
    resample = _PIL_FILTERS.get(pre["interpolation"], Image.BILINEAR)
    image = _center_crop(_resize_shorter_side(image, int(round(size / float(pre["crop_pct"]))), resample), size)
    pixels = np.asarray(image, dtype=np.float32) * np.float32(1.0 / 255)
    mean, std = np.asarray(pre["mean"], np.float32), np.asarray(pre["std"], np.float32)
    return np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1))


def _resize_shorter_side(image: Image.Image, short: int, resample: int) -> Image.Image:
    width, height = image.size
    if width <= height:
        size = (short, int(short * height / width))
    else:
        size = (int(short * width / height), short)
    return image if size == image.size else image.resize(size, resample=resample)


def _center_crop(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    if size > width or size > height:       # torchvision pads with black first
        padded = Image.new(image.mode, (max(width, size), max(height, size)))
        padded.paste(image, ((size - width) // 2 if size > width else 0,
                             (size - height) // 2 if size > height else 0))
        image, (width, height) = padded, padded.size
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


# -- classifiers --------------------------------------------------------------------------------------
class TorchClassifier:
    """A checkpoint run in PyTorch with the training's own evaluation transform, predicting as the run
    evaluated it (test-time flip from the checkpoint's "tta", engine.models.predictor)."""

    kind = "torch"
    modality = "image"

    def __init__(self, checkpoint_path: str | os.PathLike, device: str = "cpu"):
        _refuse_pickle(checkpoint_path)
        from engine.core.device import resolve_device
        from engine.data.transforms import eval_transform
        from engine.models.checkpoint import load_checkpoint
        from engine.models.predictor import trusted
        self.path = str(checkpoint_path)
        self.device = resolve_device(device)
        model, checkpoint = load_checkpoint(checkpoint_path)
        refuse_other_modality(self.path, checkpoint.meta, self.modality)
        model = trusted(model, checkpoint)           # the unknown score's tensors go to the device too
        self.model = model.to(self.device) if self.device.type != "cpu" else model
        self.meta = checkpoint.meta
        self.classes = checkpoint.classes
        self.preprocessing = checkpoint.preprocessing.to_dict()
        self.transform = eval_transform(checkpoint.preprocessing)

    def inputs(self, images: Sequence[Image.Image]):
        import torch
        return torch.stack([self.transform(image) for image in images])

    def logits(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.scored(images)[0]

    def scored(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray | None]:
        """(calibrated logits, unknown scores or None) of `images`."""
        return torch_outputs(self.model, self.inputs(images), self.device)


class OnnxClassifier:
    """An exported `.onnx` file run with onnxruntime; classes and preprocessing come from its metadata."""

    kind = "onnx"
    modality = "image"

    def __init__(self, onnx_path: str | os.PathLike):
        self.path = str(onnx_path)
        self.session, self.meta = open_onnx(self.path)
        refuse_other_modality(self.path, self.meta, self.modality)
        self.classes = list(self.meta["classes"])
        self.preprocessing = dict(self.meta["preprocessing"])
        self.input_name = self.session.get_inputs()[0].name

    def inputs(self, images: Sequence[Image.Image]) -> np.ndarray:
        return np.stack([preprocess_image(image, self.preprocessing) for image in images])

    def logits(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.scored(images)[0]

    def scored(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray | None]:
        """(calibrated logits, unknown scores or None) of `images`."""
        return onnx_outputs(self.session.run(None, {self.input_name: self.inputs(images)}))


def torch_outputs(model, batch, device) -> tuple[np.ndarray, np.ndarray | None]:
    """(logits, unknown scores or None) of an engine.models.predictor.Trusted on a batch, as numpy."""
    import torch
    with torch.inference_mode():
        return output_arrays(model(batch if device.type == "cpu" else batch.to(device)))


def output_arrays(outputs) -> tuple[np.ndarray, np.ndarray | None]:
    """(logits, unknown scores or None) as numpy from what a model returns: a tensor of logits, or an
    engine.models.predictor.Trusted's (logits, probabilities[, ood_score])."""
    if not isinstance(outputs, (tuple, list)):
        outputs = (outputs,)
    return outputs[0].float().cpu().numpy(), (outputs[2].double().cpu().numpy() if len(outputs) > 2 else None)


def scored_outputs(classifier, inputs) -> tuple[np.ndarray, np.ndarray | None]:
    """(logits, unknown scores or None) of any classifier: its `scored`, or its `logits` alone when a
    modality's classifier has no score."""
    if hasattr(classifier, "scored"):
        return classifier.scored(inputs)
    return classifier.logits(inputs), None


def onnx_outputs(outputs: list) -> tuple[np.ndarray, np.ndarray | None]:
    """(logits, unknown scores or None) from an exported file's outputs (logits[, probabilities, ood_score])."""
    return outputs[0].astype(np.float32), (outputs[2].astype(np.float64) if len(outputs) > 2 else None)


def open_onnx(path: str) -> tuple:
    """(onnxruntime session on the CPU, TransferLab metadata) of an exported file; ModelFileError says
    what is wrong with a missing, damaged or foreign file."""
    from engine.outputs.openvino import IrSession, OpenVinoMissing, ir_file
    name = os.path.basename(path)
    xml = ir_file(path)
    if xml is not None:
        if not xml.is_file():
            raise ModelFileError(f"model file not found: {xml}")
        try:
            session = IrSession(xml)
        except OpenVinoMissing:
            raise
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises several types for damaged files
            raise ModelFileError(f"{name} is not a valid OpenVINO model ({first_line(exc, 200)})") from None
        return session, read_onnx_metadata(session.get_modelmeta().custom_metadata_map, name)
    import onnxruntime as ort
    ort.set_default_logger_severity(3)        # errors only: graph-cleaning notes are not the user's to act on
    if not os.path.isfile(path):
        raise ModelFileError(f"model file not found: {path}")
    try:
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several types for damaged files
        raise ModelFileError(f"{name} is not a valid ONNX model ({first_line(exc, 200)})") from None
    return session, read_onnx_metadata(session.get_modelmeta().custom_metadata_map, name)


def read_onnx_metadata(custom_metadata: dict[str, str], name: str = "model") -> dict:
    """TransferLab's metadata from an ONNX file's metadata_props (each value is JSON)."""
    try:
        meta = {key: json.loads(value) for key, value in custom_metadata.items()}
    except json.JSONDecodeError:
        raise ModelFileError(f"{name} has damaged TransferLab metadata") from None
    if meta.get("format") != ONNX_FORMAT or "classes" not in meta or "preprocessing" not in meta:
        raise ModelFileError(f"{name} has no TransferLab metadata (classes, preprocessing): "
                             "export it with `transferlab export`")
    return meta


def resolve_checkpoint(path: str | os.PathLike) -> tuple[Path, Path | None]:
    """(checkpoint file, run folder or None) for a run folder or a checkpoint path."""
    path = Path(path)
    if path.is_dir():
        checkpoint = RunFolder(path).checkpoint
        if not checkpoint.is_file():
            raise ModelFileError(f"{path} is not a run folder (it has no {CHECKPOINT})")
        return checkpoint, path
    if not path.is_file():
        raise ModelFileError(f"no such run folder or checkpoint: {path}")
    _refuse_pickle(path)
    run_dir = path.parent if RunFolder(path.parent).metrics.is_file() else None
    return path, run_dir


def load_classifier(path: str | os.PathLike, device: str = "cpu"):
    """A classifier for a run folder, a `.safetensors` checkpoint or an exported `.onnx` file, of whatever
    modality it classifies (`.classes`, `.meta`, `.kind`, `logits(inputs)`). `device` (auto | cpu | cuda |
    cuda:N | mps) runs a checkpoint; an `.onnx` file runs in ONNX Runtime on the CPU."""
    from engine.core.device import resolve_device
    resolve_device(device)              # a device that is not there is refused first, whatever the model
    from engine.outputs.openvino import ir_file
    modality = model_modality(path)
    if Path(path).suffix.lower() == ".onnx" or ir_file(path) is not None:
        return modality.classifier(path, "onnx")
    checkpoint, _ = resolve_checkpoint(path)
    return modality.classifier(checkpoint, "torch", device)


def model_modality(path: str | os.PathLike) -> Modality:
    """What a run folder, checkpoint or `.onnx` file classifies, from its metadata alone (no torch for an
    `.onnx` file); the default modality when the file cannot be read, whose loader then says why."""
    from engine.outputs.openvino import ir_file, read_ir_card
    path = Path(path)
    try:
        if ir_file(path) is not None:
            return modalities.of(read_onnx_metadata({k: json.dumps(v) for k, v in read_ir_card(ir_file(path)).items()}))
        if path.suffix.lower() == ".onnx":
            import onnx                  # not engine.outputs.export: predicting from an .onnx stays torch-free
            proto = onnx.load(str(path), load_external_data=False)
            return modalities.of(read_onnx_metadata({p.key: p.value for p in proto.metadata_props}))
        from engine.models.checkpoint import read_checkpoint_meta
        checkpoint, _ = resolve_checkpoint(path)
        return modalities.of(read_checkpoint_meta(checkpoint))
    except modalities.UnknownModality:
        raise
    except Exception:  # noqa: BLE001 - unreadable or not ours: the loader names the problem
        return modalities.named(None)


def refuse_other_modality(path: str, meta: dict, expected: str) -> None:
    """ModelFileError when a model file classifies another modality than the classifier reading it."""
    holds = modalities.of(meta)
    if holds.name != expected:
        raise ModelFileError(f"{os.path.basename(path)} classifies {holds.nouns}, not "
                             f"{modalities.named(expected).nouns}")


def _refuse_pickle(path: str | os.PathLike) -> None:
    """Name the problem when a pickled PyTorch file is given (safetensors would only say "not ours").

    A safetensors file starts with its 8-byte header length and then '{', which tells the two apart.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if head.startswith(_PICKLE_MAGIC) and head[8:9] != b"{":
        raise ModelFileError(f"{os.path.basename(path)} is a pickled PyTorch file; TransferLab never loads "
                             "pickles (they can run code): use a run folder, a .safetensors or an .onnx file")


# -- prediction ---------------------------------------------------------------------------------------
@dataclass
class Prediction:
    path: str
    label: str                      # the top class, or UNKNOWN (unlike anything taught, or below min probability)
    score: float                    # calibrated probability of the top class
    top_k: list[dict]               # [{"label": str, "score": float}], most likely first
    nearest: str = ""               # the top class, also when the label is UNKNOWN
    ood_score: float | None = None  # the run's unknown score (higher: less like the training data)
    threshold: float | None = None  # above it the input is unknown (None: the model has no such score)

    @property
    def unlike_training(self) -> bool:
        """Whether the unknown score turned it away (not a low probability)."""
        return self.ood_score is not None and self.threshold is not None and self.ood_score > self.threshold

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PredictionReport:
    predictions: list[Prediction] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)       # [{"path": str, "reason": str}]


def collect_images(inputs: Iterable[str | os.PathLike]) -> tuple[list[str], list[dict]]:
    """Image paths from files and folders (walked recursively, sorted, hidden files skipped).

    Files named explicitly are always tried; inside folders only image extensions count.
    Returns (paths, skipped) where skipped holds inputs that do not exist.
    """
    paths, skipped = [], []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            for root, dirs, files in os.walk(item):
                dirs[:] = sorted(d for d in dirs if not is_hidden_or_system(d))
                paths.extend(os.path.join(root, f) for f in sorted(files)
                             if has_image_extension(f) and not is_hidden_or_system(f))
        elif item.is_file():
            paths.append(str(item))
        else:
            skipped.append({"path": str(item), "reason": "no such file or folder"})
    return paths, skipped


def predict_images(classifier: TorchClassifier | OnnxClassifier, inputs: Iterable[str | os.PathLike], *,
                   top_k: int = 5, threshold: float = 0.0, accept: float | None = None, batch_size: int = 16,
                   progress: Callable[[str, int, int], None] | None = None,
                   control: RunControl | None = None) -> PredictionReport:
    """Top-k labels with probabilities for every image in `inputs` (files and folders).

    Images load through `engine.data.images.load_image` (EXIF rotation, any colour mode); unusable ones are
    listed in `report.skipped` with the reason and never stop the others. `threshold` in [0, 1]:
    below it the label is UNKNOWN (the top-k list still says what the model saw). `control` (optional)
    is checked between batches, so a GUI can cancel (raises engine.core.control.Cancelled).
    """
    paths, skipped = collect_images(inputs)
    report = predict_items(classifier, [(path, path) for path in paths], read_image_input, top_k=top_k,
                           threshold=threshold, accept=accept, batch_size=batch_size, progress=progress, control=control)
    report.skipped[:0] = skipped
    return report


def read_image_input(path: str):
    """The image at `path` for a classifier; SampleError (its reason) when it cannot be used."""
    try:
        return load_image(path)
    except ImageError as exc:
        raise SampleError(exc.reason) from None


class SampleError(ValueError):
    """One input cannot be predicted on (unreadable image, empty text); the others go on."""


def predict_items(classifier, items: Sequence[tuple[str, object]], read: Callable[[object], object], *,
                  top_k: int = 5, threshold: float = 0.0, accept: float | None = None, batch_size: int = 16,
                  progress: Callable[[str, int, int], None] | None = None,
                  control: RunControl | None = None) -> PredictionReport:
    """Top-k labels with calibrated probabilities for each (origin, payload) of any modality: `read(payload)`
    makes the classifier's input or raises SampleError, which lists the item as skipped with its reason.
    The label is UNKNOWN when the model's unknown score is above its threshold (the one that accepts
    `accept` of the validation inputs; None: the run's own, 95 % unless chosen otherwise) or when the top
    probability is below `threshold` in [0, 1]. `control` is checked between batches."""
    if top_k < 1:
        raise ValueError(f"top-k must be at least 1, not {top_k}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be between 0 and 1, not {threshold}")
    unknown_above = unknown_threshold(classifier.meta, accept)
    report = PredictionReport()
    for start in range(0, len(items), batch_size):
        if control is not None:
            control.checkpoint()
        origins, inputs = [], []
        for origin, payload in items[start:start + batch_size]:
            try:
                inputs.append(read(payload))
                origins.append(origin)
            except SampleError as exc:
                report.skipped.append({"path": origin, "reason": str(exc)})
        if inputs:
            logits, scores = scored_outputs(classifier, inputs)
            probs = softmax(logits)
            report.predictions.extend(
                _prediction(origin, row, classifier.classes, top_k, threshold,
                            None if scores is None else float(scores[i]), unknown_above)
                for i, (origin, row) in enumerate(zip(origins, probs)))
        if progress:
            progress("predict", min(start + batch_size, len(items)), len(items))
    return report


def unknown_threshold(meta: dict, accept: float | None) -> float | None:
    """The unknown score above which a model's input is unknown: the run's threshold, or the one that
    accepts `accept` of its validation inputs; None for a model without the score."""
    from engine.core.confidence import threshold_at
    trust = (meta or {}).get("trust") or {}
    if not trust.get("method"):
        if accept is not None:
            raise ValueError("this model has no unknown score (trained before calibration): train it again "
                             "to use --accept")
        return None
    return float(trust["threshold"]) if accept is None else threshold_at(trust, accept)


def _prediction(path: str, probs: np.ndarray, classes: list[str], top_k: int, threshold: float,
                ood_score: float | None = None, unknown_above: float | None = None) -> Prediction:
    order = np.argsort(-probs, kind="stable")[:top_k]
    best = float(probs[order[0]])
    ranked = [{"label": classes[k], "score": round(float(probs[k]), 6)} for k in order]
    unlike = ood_score is not None and unknown_above is not None and ood_score > unknown_above
    label = UNKNOWN if unlike or best < threshold else classes[order[0]]
    return Prediction(path, label, round(best, 6), ranked, classes[order[0]],
                      None if ood_score is None else round(ood_score, 6),
                      None if unknown_above is None or ood_score is None else round(unknown_above, 6))


def unknown_scores(model_path: str | os.PathLike, sources: Sequence[str], control: RunControl | None = None,
                   progress: Callable[[str, int, int], None] | None = None) -> tuple[np.ndarray, list[dict]]:
    """(the unknown score of every input found in `sources`, what was skipped) for the model at
    `model_path`: folders and files of images, or files of texts, as `predict` reads them."""
    classifier = load_classifier(model_path, "cpu")
    modality = modalities.of(classifier.meta)
    items, skipped = modality.prediction_items(list(sources))
    report = predict_items(classifier, items, modality.prediction_input, top_k=1, progress=progress, control=control)
    scores = np.array([p.ood_score for p in report.predictions if p.ood_score is not None], dtype=np.float64)
    return scores, skipped + report.skipped


def write_csv(report: PredictionReport, path: str | os.PathLike, top_k: int) -> None:
    """One row per input: path, label, score, then label_i/score_i for the top k, then nearest, ood_score
    and threshold (empty for a model without the unknown score), then error."""
    from engine.core.files import atomic_path
    header = ["path", "label", "score"]
    for i in range(1, top_k + 1):
        header += [f"label_{i}", f"score_{i}"]
    header += ["nearest", "ood_score", "threshold", "error"]
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for p in report.predictions:
            ranked = [cell for entry in p.top_k for cell in (entry["label"], entry["score"])]
            trust = [p.nearest, "" if p.ood_score is None else p.ood_score, "" if p.threshold is None else p.threshold]
            writer.writerow([p.path, p.label, p.score, *ranked, *[""] * (2 * top_k - len(ranked)), *trust, ""])
        for s in report.skipped:
            writer.writerow([s["path"], "", "", *[""] * (2 * top_k), "", "", "", s["reason"]])
