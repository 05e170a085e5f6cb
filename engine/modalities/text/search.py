"""The recipe search for texts (`main.py train TEXTS.csv --out RUN --auto`): the image search's phases
where they apply to a sentence encoder, and its one protocol: every finalist trained on the training texts
alone and judged on the same validation texts, the default recipe replaced only by a finalist better beyond
chance (engine.search.auto).

1. the default recipe (head only on cached sentence vectors): the incumbent, in well under a minute;
2. no backbone assessment: one encoder (the user's, else all-MiniLM-L6-v2); its sentence vectors of the
   training texts, cached by the first model, are what head recipes are screened on;
3. head recipes screened with Optuna exactly as for images (TPE, median pruning, k-fold CV inside the
   training texts with near-identical texts in one fold, SQLite), without the mirrored views; the best one
   and the fitted head (logistic regression solved by L-BFGS) become finalists;
4. the last 2 layers on cached hidden states (lr 1e-3: 88.0 % against the head's 85.0 % on fortunes,
   README) when the measured pass and training step say enough epochs fit in the time left, pruned when
   they fall behind;
5. whatever they leave goes back to head recipes. The winner's test split is evaluated once.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from engine.core.callbacks import Callback
from engine.core.control import RunControl
from engine.data.report import DatasetReport
from engine.modalities.text.catalog import DEFAULT_TEXT_ENCODER, is_text_backbone
from engine.search.auto import DEFAULT_BUDGET_S, RecipeSearch
from engine.search.crossval import FeatureViews
from engine.training.config import TrainConfig
from engine.modalities.text.inputs import EmbeddingCache, prepare_text_config

DEEP_LAYERS = 2
DEEP_LR = 1e-3


class TextRecipeSearch(RecipeSearch):
    """RecipeSearch on a text dataset; the same leaderboard, run folder and result."""

    deep_name = f"last {DEEP_LAYERS} layers"
    ensembles = False                   # not tried by the text search (engine.search.ensemble combines text runs)
    mirrored_views = False              # a text has no mirror image

    def __init__(self, report: DatasetReport, run_dir: str | Path, budget_s: float = DEFAULT_BUDGET_S,
                 base: TrainConfig | None = None, callbacks: list[Callback] | None = None,
                 control: RunControl | None = None, unlabelled: list[str] | None = None):
        base = prepare_text_config(replace(base or TrainConfig(backbone=DEFAULT_TEXT_ENCODER)))
        if not is_text_backbone(base.backbone):
            base.backbone = DEFAULT_TEXT_ENCODER
        super().__init__(report, run_dir, budget_s, base, callbacks, control, backbones=[base.backbone],
                         unlabelled=unlabelled)
        self._augment = False
        self._bundle = None
        self._step_s: tuple[float, float] | None = None     # (frozen pass per batch, training step), measured

    # -- 2. the encoder's sentence vectors instead of an assessment ----------------------------------
    def _assess(self) -> None:
        """The train + val sentence vectors (read back from the cache the first model filled)."""
        encoder = self.backbones[0]
        train, val = self.report.split("train"), self.report.split("val")
        cache = EmbeddingCache(self._text_bundle().model, self._text_bundle().tokenizer)
        vectors = torch.cat([cache.embeddings([s.text for s in samples], self.control, self.callbacks.on_progress)
                             for samples in (train, val)])
        self.features[encoder] = FeatureViews(vectors.unsqueeze(0), np.array([s.label for s in train + val]),
                                              np.array([False] * len(train) + [True] * len(val)))

    def _text_bundle(self):
        if self._bundle is None:
            from engine.modalities.text.model import create_text_model
            self._bundle = create_text_model(self.base.backbone, len(self.report.classes), head=self.base.head,
                                             max_tokens=self.base.max_tokens)
        return self._bundle

    def _seconds_per_image(self, backbone: str) -> float:
        """A text through the encoder, as the first model measured it (its sentence vectors dominate it)."""
        return self.candidates[0].seconds / max(self._search_images(), 1)

    def _searched_backbones(self) -> list[str]:
        return [self.backbones[0]]

    def _dropout(self, backbone: str) -> float:
        return float(self._text_bundle().model.drop_rate)

    def _architecture(self, backbone: str):
        return self._text_bundle().model

    # -- 4. deeper: the last layers on tokens ----------------------------------------------------------
    def _head_search_seconds(self) -> float:
        from engine.search.auto import DEEP_PLANNED_EPOCHS, HEAD_MIN_SHARE
        left = self.budget.left
        _, epoch_s = self._predict_deep_costs(self._deep_config(self.base))
        return max(HEAD_MIN_SHARE * left, left - DEEP_PLANNED_EPOCHS * epoch_s - self._reserve_s())

    def _deep_config(self, head_recipe: TrainConfig) -> TrainConfig:
        return replace(head_recipe, freeze="last-n", freeze_blocks=DEEP_LAYERS, lr=DEEP_LR, augmentation="none",
                       cached_views=1, tta="none")

    def _predict_deep_costs(self, config: TrainConfig) -> tuple[float, float]:
        """(pass seconds, epoch seconds): the frozen layers' pass over every text and one training step of
        the last layers on their hidden states, both timed on a batch of real training texts; an epoch is
        the steps of the training split plus validation at a third of a step per batch."""
        if self._step_s is None:
            self._step_s = text_step_seconds(self._text_bundle(), config, self.report)
        prefix_s, step_s = self._step_s
        batches = -(-len(self.report.samples) // config.batch_size)
        steps = -(-len(self.report.split("train")) // config.batch_size)
        val_s = step_s / 3 * -(-len(self.report.split("val")) // config.batch_size)
        return batches * prefix_s, steps * step_s + val_s


def text_step_seconds(bundle, config: TrainConfig, report: DatasetReport, repeats: int = 2) -> tuple[float, float]:
    """(seconds of the frozen layers' pass for a batch, seconds of one training step of what `config`
    trains) on a batch of the dataset's own training texts (their lengths set the cost), on cached hidden
    states as a text fit trains (engine.modalities.text.inputs); the best of `repeats` after a warm-up. The weights are put back."""
    from engine.models.layers import LayerTree
    from engine.modalities.text.inputs import SuffixOnTextActivations, activation_boundary, frozen_prefix
    from engine.training.timing import best_step_seconds
    model = bundle.model
    saved = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    texts = [s.text for s in report.split("train")[:config.batch_size]]
    tokens = torch.from_numpy(bundle.tokenizer.encode(texts))
    targets = torch.zeros(len(texts), dtype=torch.long)
    LayerTree(model).apply_preset(config.freeze, config.freeze_blocks)
    boundary = activation_boundary(model)
    net, inputs, prefix_s = model, tokens, 0.0
    if boundary is not None:
        model.eval()
        began = time.perf_counter()
        with torch.inference_mode():
            hidden = frozen_prefix(model, tokens, boundary)
        prefix_s = time.perf_counter() - began
        inputs = torch.cat([hidden.clone(), tokens[:, 1:2].transpose(1, 2).to(hidden.dtype)], dim=2)
        net = SuffixOnTextActivations(model, boundary)
    model.train()
    try:
        best = best_step_seconds(net, model, inputs, targets, repeats, lr=1e-6)
    finally:
        model.load_state_dict(saved)
        model.eval()
        for param in model.parameters():
            param.requires_grad_(True)
    return prefix_s, best
