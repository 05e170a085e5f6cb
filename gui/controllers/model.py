"""The Model step's work: load the engine once, and build the chosen backbone for the dataset's classes."""
from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QSettings, Signal

from engine.core import modality as modalities
from gui.controllers.base import Controller
from gui.jobs import build_model, load_engine
from gui.workers import TaskGroup, TaskSlot

if TYPE_CHECKING:
    from engine.core.modality import Modality
    from gui.state import AppState

IMAGENET_CLASSES = 1000          # head size shown before a dataset is loaded


class ModelController(Controller):
    """Keeps `state.model` the chosen backbone with a head for the dataset: a new choice replaces a build
    still running. The backbone last used (per kind of data) is remembered in the settings."""

    engine_ready = Signal()
    model_ready = Signal(object)          # gui.jobs.ModelInfo

    def __init__(self, state: AppState, tasks: TaskGroup, settings: QSettings, parent: QObject):
        super().__init__(parent)
        self.state, self.settings = state, settings
        self.engine_slot = TaskSlot(tasks)
        self.slot = TaskSlot(tasks)
        state.events.backbone.connect(self._on_backbone_changed)
        state.events.report.connect(self.match_backbone_to_data)
        for signal in (state.events.report, state.events.scanning):
            signal.connect(self.request_model)

    # -- the engine ------------------------------------------------------------------------------
    def load_engine(self) -> None:
        """Import torch, timm and the trainer on a worker (seconds), once the window is on screen."""
        self.engine_slot.start(load_engine, on_result=self._on_engine_loaded,
                               on_failed=partial(self.error.emit, "The training engine failed to load"))

    def _on_engine_loaded(self, engine) -> None:
        """The panels fill their lists and settings from the engine; the last backbone used comes back
        (unless a project opened meanwhile chose one)."""
        self.state.engine = engine
        if self.state.backbone is None:
            self._choose_last_used(self.state.modality)
        self.match_backbone_to_data()
        self.engine_ready.emit()

    def match_backbone_to_data(self) -> None:
        """Texts train a text encoder and images an image backbone: a dataset of another modality than the
        chosen model's brings back the last model of its modality used (else its default)."""
        state = self.state
        if state.engine is None or state.report is None or state.backbone_fits_data():
            return
        self._choose_last_used(state.modality)

    def _choose_last_used(self, modality: Modality) -> None:
        """The model last chosen for `modality`'s data, while this machine still offers it; else its default."""
        default = modality.default_backbone
        saved = str(self.settings.value(modality.settings_key, default))
        self.state.choose_backbone(saved if self.state.backbone_row(saved) else default)

    # -- the model -------------------------------------------------------------------------------
    def _on_backbone_changed(self, backbone: str) -> None:
        self.settings.setValue(modalities.for_backbone(backbone).settings_key, backbone)
        self.request_model()

    def request_model(self) -> None:
        """Build the chosen backbone, its head sized for the dataset, on a worker for the layer tree.
        While a scan runs the classes are not known yet: the scan's end asks again."""
        state = self.state
        if state.engine is None or state.backbone is None or state.scanning or state.model_is_current():
            return
        num_classes = len(state.report.classes) if state.report else IMAGENET_CLASSES
        self.slot.start(partial(build_model, state.backbone, num_classes), on_result=self._on_built,
                        on_failed=partial(self.error.emit, "The model cannot be built"))

    def _on_built(self, info) -> None:
        self.state.use_model(info)
        self.model_ready.emit(info)
