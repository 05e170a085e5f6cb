"""The one application state the window and every panel share (napari's ViewerModel, in small).

Plain Python and psygnal: no Qt and no torch at import. Panels render it and write the user's intent
into it; the controllers (gui.controllers) react to it by starting engine work (scan the sources, build
the chosen backbone for the dataset's classes); a project file is its serialisation (gui.project_io). Assigning a field
emits `state.events.<field>(new, old)`; `corrections`, `settings` and `runs` are evented containers
whose own `events` report each change.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from psygnal import evented
from psygnal.containers import EventedDict, EventedList

from engine.core import modality as modalities
from engine.core.runfolder import RunFolder
from engine.project import RunRecord

if TYPE_CHECKING:
    from engine.core.modality import Modality
    from engine.data.report import DatasetReport
    from engine.models.layers import LayerTree
    from engine.training.config import TrainConfig
    from gui.jobs import EngineInfo, ModelInfo, TrainingRun

# A new engine, report, model or run is news even when it compares equal to the one before (and
# comparing two dataset reports would walk every sample); assigning dataset sources asks for a scan.
ASSIGNMENT_IS_NEWS = {name: operator.is_ for name in ("engine", "dataset_sources", "report", "model", "active_run")}


@evented(equality_operators=ASSIGNMENT_IS_NEWS)
@dataclass(eq=False)
class AppState:
    """What the user is working on; `frozen_parameters` is the freeze state of `backbone`, which the
    built model's layer tree follows and reports back (None: not chosen yet, so head only)."""

    engine: EngineInfo | None = None              # backbone catalogue and setting choices, once torch loaded
    dataset_sources: list[str] = field(default_factory=list)
    scanned_sources: list[str] = field(default_factory=list)   # the last scan's sources, even if it failed
    text_columns: dict | None = None              # a table of texts' text/label columns as chosen (None: guessed)
    report: DatasetReport | None = None
    scanning: bool = False
    assessing: bool = False                       # the backbones are being assessed: no training meanwhile
    corrections: EventedDict = field(default_factory=EventedDict)   # image path -> {"action", "label"}
    unlabelled_sources: list[str] = field(default_factory=list)   # the unlabelled pool (folders, text files)
    additions: EventedDict = field(default_factory=EventedDict)     # pool path -> {"label", "text"}: labelled here
    backbone: str | None = None
    weights: str = "pretrained"                   # TrainConfig.weights: 'pretrained', 'random' or a file
    model: ModelInfo | None = None                # built for the layer tree (structure only)
    frozen_parameters: list[str] | None = None
    settings: EventedDict = field(default_factory=EventedDict)      # TrainConfig field -> the form's value
    invalid_setting: str = ""                     # why the form's input is not a setting yet (half-typed lr)
    runs: EventedList = field(default_factory=EventedList)           # engine.project.RunRecord, oldest first
    active_run: TrainingRun | None = None
    latest_run: RunRecord | None = None           # newest finished run whose checkpoint is on disk
    project_path: str | None = None               # None: unsaved
    assessments: list[dict] = field(default_factory=list)   # this dataset's backbone assessments, best first
    assessment_summary: str = ""                  # what they mean, in plain words
    training_mode: str = "manual"                 # 'manual': one fit of the settings; 'automatic': a recipe search
    search_minutes: float = 10.0                  # the automatic mode's time (engine.search.auto.DEFAULT_BUDGET_S)
    search_backbones: list[str] | None = None     # what a search and an assessment try (None: all with offline weights)
    predict_model: str | None = None              # Try it's chosen .onnx, checkpoint or run folder (not the latest run)
    predict_model_modality: Modality | None = None  # what predict_model classifies

    def __post_init__(self) -> None:
        for signal in (self.runs.events.inserted, self.runs.events.removed, self.runs.events.changed):
            signal.connect(self._update_latest_run)
        self.events.frozen_parameters.connect(self._freeze_model)
        self.events.report.connect(self._forget_assessments)

    # -- model ---------------------------------------------------------------------------------
    def backbone_row(self, name: str) -> dict | None:
        """The engine's catalogue entry for a backbone or a text encoder (None when unknown or before torch
        loaded)."""
        if self.engine is None:
            return None
        return next((row for row in [*self.engine.backbones, *self.engine.text_encoders] if row["name"] == name),
                    None)

    def backbone_rows(self, modality: Modality) -> list[dict]:
        """The engine's catalogue rows of `modality`'s models ([] before torch loaded)."""
        if self.engine is None:
            return []
        return [row for row in [*self.engine.backbones, *self.engine.text_encoders]
                if modalities.for_backbone(row["name"]) is modality]

    @property
    def modality(self) -> Modality:
        """What the dataset holds (images until one is loaded): its model list, settings and words apply."""
        return modalities.of(self.report)

    @property
    def backbone_modality(self) -> Modality:
        """What the chosen backbone reads."""
        return modalities.for_backbone(self.backbone)

    def backbone_fits_data(self) -> bool:
        """The chosen model reads what the dataset holds (a dataset of another modality needs another model)."""
        return self.backbone_modality is modalities.of(self.report)

    def add_text_encoder(self, folder: str) -> None:
        """A local Hugging Face model folder joins the engine's text encoders (once), as a catalogue row."""
        if self.engine is None or any(row["name"] == folder for row in self.engine.text_encoders):
            return
        self.engine.text_encoders.append({"name": folder, "title": f"{Path(folder).name} (model folder)",
                                          "available": True, "weights_available": True,
                                          "weights_source": "your folder", "notes": folder, "hint": "",
                                          "modality": "text"})

    def choose_backbone(self, name: str) -> None:
        """A new backbone starts from ImageNet weights when they are on this machine, training its head only."""
        self.backbone = name
        self.weights = "pretrained" if self.backbone_row(name)["weights_available"] else "random"
        self.frozen_parameters = None

    def _forget_assessments(self) -> None:
        """Assessments describe one dataset: another one (or a rescan) starts without them."""
        self.assessments = []
        self.assessment_summary = ""

    def use_model(self, info: ModelInfo) -> None:
        """Show a freshly built model: its tree takes the freeze state, then reports every change to it."""
        if self.model is not None:
            self.model.tree.listeners.remove(self._on_tree_changed)
        _apply_freeze_state(info.tree, self.frozen_parameters)
        info.tree.listeners.append(self._on_tree_changed)
        self.model = info
        self.frozen_parameters = info.tree.frozen_parameter_names()

    def model_is_current(self) -> bool:
        """The built model is the chosen backbone with a head for the dataset's classes."""
        model = self.model
        return (model is not None and model.backbone == self.backbone
                and (self.report is None or model.num_classes == len(self.report.classes)))

    def _model_is_the_backbone(self) -> bool:
        return self.model is not None and self.model.backbone == self.backbone

    def _on_tree_changed(self, _names: list[str]) -> None:
        if self._model_is_the_backbone():          # a tree left over from the previous backbone says nothing
            self.frozen_parameters = self.model.tree.frozen_parameter_names()

    def _freeze_model(self, frozen: list[str] | None) -> None:
        if self._model_is_the_backbone():
            _apply_freeze_state(self.model.tree, frozen)

    # -- corrections and runs --------------------------------------------------------------------
    def correct(self, path: str, action: str, label: str = "") -> None:
        """Exclude, relabel or restore one sample (never its file): the next run applies it. `keep` (a sample's
        path or a near-duplicate pair's key) changes nothing in a run: the deep check asked, the user said it
        is right, and the next check does not ask again. `move` puts the sample in the split `label` names
        (near-duplicates kept in one split TransferLab chose)."""
        if action == "restore":
            self.corrections.pop(path, None)
        elif action == "move":
            self.corrections[path] = {"action": action, "label": None, "split": label}
        else:
            self.corrections[path] = {"action": action, "label": label if action == "relabel" else None}

    def training_report(self) -> DatasetReport:
        """The dataset as the next run reads it: the corrections applied (never to the files) and the samples
        labelled from the unlabelled pool added to its training split."""
        from engine.project import apply_additions, apply_corrections
        return apply_additions(apply_corrections(self.report, dict(self.corrections)), dict(self.additions))

    def record_run(self, run_dir: str, status: str, config: dict, val_accuracy: float | None = None,
                   test_accuracy: float | None = None) -> None:
        """The one writer of run records: a run keeps its place and creation time as its status changes."""
        index = next((i for i, record in enumerate(self.runs) if record.run_dir == run_dir), None)
        created = self.runs[index].created if index is not None else datetime.now().isoformat(timespec="seconds")
        record = RunRecord(run_dir, created, config.get("backbone", ""), status, val_accuracy, test_accuracy, config)
        if index is None:
            self.runs.append(record)
        else:
            self.runs[index] = record

    def _update_latest_run(self) -> None:
        self.latest_run = next((record for record in reversed(self.runs) if record.status != "running"
                                and RunFolder(record.run_dir).has_checkpoint()), None)

    # -- training ----------------------------------------------------------------------------------
    @property
    def searching(self) -> bool:
        """The active run is an automatic recipe search (it has a time budget)."""
        return getattr(self.active_run, "budget_s", None) is not None

    def can_train(self) -> bool:
        """Nothing trains or assesses, and the dataset, the engine and the model built for them are there."""
        return (self.active_run is None and self.report is not None and self.engine is not None
                and self.model_is_current() and not self.assessing)

    def training_config(self) -> TrainConfig:
        """The run as set up: the form's settings, the chosen weights and the tree's exact freeze state."""
        from engine.training.config import TrainConfig
        return TrainConfig(**self.settings, backbone=self.backbone, weights=self.weights, freeze="none",
                           frozen_parameters=self.frozen_parameters)


def _apply_freeze_state(tree: LayerTree, frozen: list[str] | None) -> None:
    if frozen is None:
        tree.apply_preset("head")
    elif tree.frozen_parameter_names() != frozen:
        tree.freeze_parameters(frozen)
