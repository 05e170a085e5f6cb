"""What a fit trains on: the part of a fit that depends on the modality, apart from the loop.

The Trainer (engine.training.trainer) runs the same stages, epochs, checkpoints and resumable states for
every dataset; a `TrainingInputs` gives it the model and the loaders for the current freeze state (cached
frozen outputs where that is exact, else raw inputs), what evaluation reads, and what identifies a cache a
resumed fit must find again. `inputs_for(report)` picks the one a dataset needs.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
from torch import nn
from torch.utils.data import DataLoader, WeightedRandomSampler

from engine.core import modality as modalities
from engine.data.report import DatasetReport
from engine.models.catalog import ModelBundle
from engine.models.predictor import predictor
from engine.training.config import TrainConfig
from engine.training.optim import class_weights


class TrainingInputs(ABC):
    """One fit's inputs for one modality. The Trainer binds itself (`bind`) at construction; from then
    on the inputs read the fit's report, config, model, control and progress callbacks from it, and add
    their notes to `trainer.path_notes`."""

    def __init__(self):
        self.trainer = None
        self.feature_cache = None                  # the cache the current stage trains on, if any
        self.cached_net: nn.Module | None = None   # set while a stage trains on cached inputs
        self.unreadable: dict[str, str] = {}        # inputs that could not be read during the fit -> why

    def bind(self, trainer) -> None:
        self.trainer = trainer

    @property
    def strategy(self):
        return self.trainer.strategy

    # -- set-up ----------------------------------------------------------------------------------------
    def configure(self, config: TrainConfig) -> TrainConfig:
        """The config this modality trains with (settings that do not apply to it set aside)."""
        return config

    @abstractmethod
    def create_bundle(self, config: TrainConfig, num_classes: int) -> ModelBundle:
        """The model to train when none was passed in (the global random streams are seeded)."""

    # -- training -----------------------------------------------------------------------------------
    @abstractmethod
    def pipeline(self) -> tuple[nn.Module, DataLoader, DataLoader, str]:
        """(network to step, train loader, val loader, path name) for the model's current freeze state."""

    @abstractmethod
    def eval_inputs(self, samples) -> tuple[nn.Module, DataLoader]:
        """Network and loader that evaluate the checkpoint on `samples`, on what the last stage trained on."""

    def evaluated(self, net: nn.Module) -> nn.Module:
        """What predicts in evaluation: the whole model's predictor (test-time augmentation included), a
        network on cached inputs as it is."""
        return predictor(net, self.trainer.config) if net is self.trainer.model else net

    def reference_samples(self, samples, limit: int, seed: int = 0) -> list:
        """The training samples the unknown score keeps features of: all of them when evaluation reads
        cached inputs (read back, no pass), else a seeded choice of at most `limit`."""
        if self.cached_net is not None or len(samples) <= limit:
            return list(samples)
        rng = np.random.default_rng(seed)
        return [samples[i] for i in sorted(rng.choice(len(samples), limit, replace=False))]

    @abstractmethod
    def cache_fingerprint(self, path: str) -> str | None:
        """What identifies the cached inputs of `path` (None for raw inputs): a resumed stage checks it."""

    @abstractmethod
    def frozen_pass(self, path: str) -> str:
        """Which engine computed the frozen layers' output for `path` (config.json's "frozen_pass")."""

    def fit_start(self, path: str) -> dict:
        """What `on_fit_start` says about the inputs: augmented ones, images decoded once."""
        return {"augmented": False, "images_decoded_once": False}

    # -- after training ------------------------------------------------------------------------------
    def annotate_metrics(self, metrics: dict, predictions: dict) -> None:
        """Add what the results need beside each row, before metrics.json and predictions.json are written
        (the paths alone say which image it is)."""

    @abstractmethod
    def release(self) -> None:
        """Let go of what the inputs hold in memory once the fit is over (caches can take a quarter of
        RAM each); `feature_cache` stays, to say what the fit read and computed."""

    # -- shared by the modalities --------------------------------------------------------------------
    @property
    def pin_memory(self) -> bool:
        """Page-locked batches copy to a GPU asynchronously; on a CPU they would only cost time."""
        return self.trainer.device.type == "cuda"

    def balanced_sampler(self, samples) -> WeightedRandomSampler | None:
        """With balance 'sampler', a sampler that draws every class equally often; else None."""
        trainer = self.trainer
        if trainer.config.balance != "sampler":
            return None
        labels = [s.label for s in samples]
        weights = class_weights(labels, len(trainer.report.classes))[labels]
        return WeightedRandomSampler(weights, len(samples), replacement=True, generator=trainer.generator)

    def note_once(self, line: str) -> None:
        """One path note (where the inputs come from, or why not cached), said once."""
        if line and line not in self.trainer.path_notes:
            self.trainer.path_notes.append(line)


def inputs_for(report: DatasetReport) -> TrainingInputs:
    """The inputs a fit on `report` trains with: its modality's (engine.core.modality)."""
    return modalities.of(report).training_inputs()
