"""Automatic recipe search within the time the user gives (`main.py train DATA --out RUN --auto`).

One protocol decides. Every finalist is trained on the training split alone, for a number of epochs fixed
before it starts, and keeps its last epoch, so the validation split never picked it; all finalists are
judged on the same validation images. The default recipe is the incumbent, trained exactly as a manual run
trains it (so the search never hands back less than it; when validation picked its epoch, that only favours
it): a finalist replaces it only when it is better by more than chance explains on those images (exact
McNemar test against the incumbent, Holm's correction over every finalist: engine.core.significance).
Everything before that is screening, which only decides what becomes a finalist:

1. the default recipe (head only on the default backbone): the incumbent, and a usable model in a minute;
2. every available backbone assessed on frozen features (engine.search.assess);
3. head recipes screened with Optuna (TPE sampler, median pruning, SQLite storage in the run folder so a
   restarted search keeps its trials) by k-fold cross-validation inside the training split, near-identical
   images kept in one fold; the best recipe becomes a finalist, and so does the fitted head (logistic
   regression solved by L-BFGS: engine.training.logistic). Screening stops when it stalls, and MLP heads are
   skipped while linear heads all score within noise of each other;
4. when the predicted time fits, the last blocks on cached activations with the best head recipe's backbone,
   pruned when they fall behind; when they finish and the same epochs fit again, the same recipe with another
   seed;
5. whatever time the last blocks leave goes back to head recipes;
6. with an unlabelled pool: pseudo-labels (engine.active.pseudo), when a head with them beat the labels alone
   on validation by more than chance: the recipe that screened best, trained again with the pool's confident
   samples in its training split, as a finalist like any other;
7. the mean probability of up to three finalists of the last blocks' backbone, chosen without looking at
   validation (the last blocks' seeds, then the heads that screened best): averaging is steadier than picking,
   and the seeds of the last blocks, one recipe, are then compared once, as part of it.
Then the decision. The winner's run folder becomes RUN, and only then is the test split evaluated, once,
within the budget. `config.json` is a plain TrainConfig, or an ensemble's member configs: `main.py train
DATA --config RUN/config.json` reproduces the model without a search.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from engine.core import modality as modalities
from engine.core.callbacks import Callback, CallbackList
from engine.core.control import Cancelled, RunControl
from engine.core.files import atomic_path, write_json
from engine.core.runfolder import RunFolder
from engine.core.significance import (SMALL_SPLIT, Decision, clearly_lower, decide, detectable_difference,
                                      wilson_interval)
from engine.data.report import DatasetReport
from engine.search.assess import Assessment, assess_backbone, available_backbones, backbone_features, pretrained
from engine.search.crossval import FeatureViews, head_recipe_accuracy
from engine.training.config import TrainConfig
from engine.training.evaluation import evaluate_test_split, stored_correctness
from engine.training.folds import near_duplicate_groups, stratified_folds, usable_folds
from engine.training.trainer import Trainer

DEFAULT_BUDGET_S = 600.0
ASSESS_SHARE = 0.3              # a backbone is assessed when its feature pass takes at most this share of the rest
ASSESS_IMAGES = 600             # backbones are compared on a stratified sample of this many train + val images
HEAD_MIN_SHARE = 0.15          # head recipes get at least this share of what is left after the assessment
SEARCHED_BACKBONES = 2          # head recipes are searched on the features of the best two backbones
MAX_HEAD_TRIALS = 100
STALL_TRIALS = 8                # screening stops after this many trials without a gain beyond its noise
LINEAR_FIRST = 4                # MLP heads wait until this many linear heads have been screened
DEEP_BLOCKS = 2                 # the last-blocks candidate: measured best depth on ELPV (README)
DEEP_LR = 1e-3
DEEP_EPOCHS = (4, 10)           # fewest worth starting, most it gets (ELPV: best on validation by epoch 3-5)
DEEP_PLANNED_EPOCHS = 10        # the time kept for the last blocks before head recipes are searched
DEEP_MEMBERS = 2                # last-blocks candidates (seeds) planned, for an ensemble of them
MAX_MEMBERS = 3                 # most finalists an ensemble averages
LOAD_S = 2.0                    # per candidate: reading its probabilities, loading and saving its weights
PLAN_MARGIN = 1.3               # epochs are planned 30 % longer than predicted: one that overruns is lost
FORWARD_TO_PASS = 0.75          # least share of the single-image forward time an image costs in a batched pass
LEADERBOARD = "leaderboard.json"
SEARCH_REPORT = "search.json"
STUDY_FILE = "search.db"
TUNED = ("backbone", "head", "optimizer", "lr", "weight_decay", "label_smoothing", "epochs", "balance",
         "augmentation", "tta", "freeze", "freeze_blocks")
"""The TrainConfig fields a search chooses; every other field keeps the user's (or the default) value."""


@dataclass
class Candidate:
    """One leaderboard row. `stage` says how `score` was measured: 'final' (trained on the training split,
    judged on the validation images like every finalist), 'member' (scored so, but compared only as part of
    the ensemble: the last blocks' seeds are one recipe), 'screening' (cross-validation inside the training
    split, deciding only what becomes a finalist) or 'assessment'."""

    name: str
    kind: str                        # 'head' | 'last-blocks' | 'ensemble' | 'assessment'
    backbone: str
    recipe: dict
    stage: str = "final"
    score: float | None = None       # accuracy, as `stage` measures it
    interval: list[float] | None = None   # its 95 % interval
    scored_by: str = ""
    screening: float | None = None   # a finalist's cross-validated accuracy inside the training split
    comparison: dict | None = None   # a finalist against the default recipe on the same validation images
    seconds: float = 0.0
    status: str = "done"             # 'done' | 'pruned' | 'skipped' | 'cancelled'
    note: str = ""
    val_accuracy: float | None = None   # of its run, when it was trained as one
    run_dir: str | None = None
    chosen: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SearchResult:
    status: str                      # 'completed' | 'cancelled'
    run_dir: str
    config: dict
    winner: str
    metrics: dict = field(default_factory=dict)
    leaderboard: list[dict] = field(default_factory=list)
    assessments: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    decision: str = ""               # why the winner won, in words
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)    # what else the user may want to know (search.json's)


class Budget:
    """Wall-clock seconds for the whole search; phases ask how much is left."""

    def __init__(self, seconds: float):
        self.seconds = float(seconds)
        self.started = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def left(self) -> float:
        return max(0.0, self.seconds - self.elapsed)


def parse_budget(text: str | float) -> float:
    """'10m', '90s', '1h', '1.5m' or plain seconds -> seconds (at least 10)."""
    value = str(text).strip().lower()
    units = {"s": 1, "m": 60, "h": 3600}
    scale = units.get(value[-1:], None)
    number = value[:-1] if scale else value
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        raise ValueError(f"budget must look like 10m, 90s or 1h, not {text!r}") from None
    if seconds < 10:
        raise ValueError(f"budget must be at least 10 seconds, not {text!r}")
    return seconds


def recipe_of(config: TrainConfig) -> dict:
    return {name: getattr(config, name) for name in TUNED}


class CandidateControl(RunControl):
    """A candidate's own stop switch that also obeys the whole search's pause and cancel."""

    def __init__(self, parent: RunControl):
        super().__init__()
        self.parent = parent

    def checkpoint(self) -> None:
        self.parent.checkpoint()
        super().checkpoint()


class RecipeSearch:
    """Runs one search into `run_dir`. Construct, then `run()`; safe on a worker thread."""

    deep_name = f"last {DEEP_BLOCKS} blocks"        # the deeper candidate's leaderboard name
    ensembles = True                                   # whether trained candidates may be averaged
    mirrored_views = True               # mirrored-image features for flip training and flip TTA, when they pay

    def __init__(self, report: DatasetReport, run_dir: str | Path, budget_s: float = DEFAULT_BUDGET_S,
                 base: TrainConfig | None = None, callbacks: list[Callback] | None = None,
                 control: RunControl | None = None, backbones: list[str] | None = None,
                 unlabelled: list[str] | None = None):
        self.report = report
        self.unlabelled = list(unlabelled or [])       # an unlabelled pool: pseudo-labels become a candidate
        self._pool_size: int | None = None
        self.noun = modalities.of(report).nouns        # what the messages call the samples
        self.run_dir = Path(run_dir)
        # head-only on cached features: with one view 'light' augmentation is not applied, so 'none' says
        # the same plainly and lets the default recipe and the search's first trial be one recipe. Every
        # candidate keeps its last epoch, so the validation images that judge it never picked it.
        given = base or TrainConfig()
        self._augment = given.augmentation != "none"     # the user's choice, for the blocks
        self.base = replace(given, freeze="head", recipe="single", frozen_parameters=None,
                            augmentation="none", cached_views=1, checkpoint="last", early_stopping=0)
        # the incumbent is the default recipe exactly as a manual run trains it: unless a finalist clearly
        # beats it, the search hands back that very model; if validation picked its epoch (checkpoint
        # 'best'), its score there is favoured, which only makes replacing it harder
        self._incumbent = replace(self.base, checkpoint=given.checkpoint, early_stopping=given.early_stopping)
        self.base.validate()
        self.budget = Budget(budget_s)
        self.callbacks = CallbackList(callbacks or [])
        self.control = control or RunControl()
        self.backbones = backbones or available_backbones()
        self.candidates: list[Candidate] = []
        self.assessments: list[Assessment] = []
        self.features: dict[str, FeatureViews] = {}
        self.timings: dict[str, float] = {}
        self.warnings: list[str] = []
        self.notes: list[str] = []
        self.decision: Decision | None = None
        self._architectures: dict = {}
        self._forward: dict[str, float] = {}
        self._study = None                 # the Optuna study of head recipes, once opened
        self._stalled = False
        self._mlp_skipped: Candidate | None = None

    # -- the whole search -------------------------------------------------------------------------
    def run(self) -> SearchResult:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        status = "completed"
        try:
            self._phase("first model", self._default_fit)
            self._phase("assessment", self._assess)
            self._phase("head search", self._head_search)
            self._phase("deeper", self._deeper)
            self._phase("more head recipes", self._more_heads)
            self._phase("pseudo-labels", self._pseudo_labels)
            self._phase("ensemble", self._ensemble)
        except Cancelled:
            status = "cancelled"
        return self._finish(status)

    def _phase(self, name: str, work) -> None:
        began = time.monotonic()
        try:
            work()
        finally:
            self.timings[name] = round(time.monotonic() - began, 1)

    def _add(self, candidate: Candidate) -> Candidate:
        self.candidates.append(candidate)
        self.callbacks.on_candidate(candidate.to_dict())
        return candidate

    def _update(self, candidate: Candidate) -> None:
        self.callbacks.on_candidate(candidate.to_dict())

    # -- 1. a first model: the incumbent ----------------------------------------------------------------
    def _default_fit(self) -> None:
        config = replace(self._incumbent, backbone=self.backbones[0] if self.base.backbone not in self.backbones
                         else self.base.backbone)
        self._warn_small_split()
        self._fit_candidate("default recipe", "head", config)

    def _fit_candidate(self, name: str, kind: str, config: TrainConfig, callbacks=(), control=None,
                       screening: float | None = None, report: DatasetReport | None = None) -> Candidate:
        """Train `config` as a run in candidates/NAME (no test split), scored on the validation images;
        `report`: the dataset with more training samples (pseudo-labels), the same validation split."""
        began = time.monotonic()
        folder = self.run_dir / "candidates" / name.replace(" ", "-")
        trainer = Trainer(report or self.report, config, folder, [*self.callbacks.callbacks, *callbacks],
                          control or self.control, evaluate_test=False)
        result = trainer.fit()
        if result.status == "cancelled" and self.control.cancelled:
            raise Cancelled()
        val = result.metrics.get("val_accuracy")
        status = "pruned" if result.status == "cancelled" else "done"
        candidate = Candidate(name, kind, config.backbone, recipe_of(config), screening=screening,
                              seconds=time.monotonic() - began, status=status, note="; ".join(trainer.path_notes),
                              val_accuracy=val, run_dir=str(folder) if result.checkpoint else None)
        if status == "done":
            self._score_on_validation(candidate, picked_there=config.checkpoint == "best")
        if config.optimizer == "lbfgs" and result.history:
            candidate.screening = result.history[-1].get("cv_accuracy")
        return self._add(candidate)

    def _score_on_validation(self, candidate: Candidate, picked_there: bool = False) -> None:
        """The final protocol: accuracy on the validation images with its 95 % interval; `picked_there`
        when its epoch was the one best on those images (the incumbent with checkpoint 'best')."""
        right = self._correct(candidate)
        if not len(right):
            candidate.scored_by = f"not scored: no validation {self.noun}"
            return
        candidate.score = float(right.mean())
        candidate.interval = list(wilson_interval(int(right.sum()), len(right)))
        candidate.scored_by = f"validation split ({len(right)} {self.noun}, " + (
            "its epoch picked there, which can only favour it)" if picked_there else
            "not used to train or pick it)")

    def _correct(self, candidate: Candidate) -> np.ndarray:
        """Whether `candidate`'s run predicts each validation image right, in the split's order."""
        right = stored_correctness(candidate.run_dir, self.report.split("val"), "val")
        return right if right is not None else np.zeros(0, dtype=bool)

    # -- 2. which backbone knows these images -----------------------------------------------------------
    def _assess(self) -> None:
        """Each backbone in turn on a stratified sample of ASSESS_IMAGES, while its predicted feature pass
        takes at most ASSESS_SHARE of what is left (the rest is for the search and deeper candidates)."""
        for index, backbone in enumerate(self.backbones):
            self.callbacks.on_progress("assess", index, len(self.backbones))
            predicted = self._predicted_pass_s(backbone) * min(1.0, ASSESS_IMAGES / self._search_images())
            if self.assessments and predicted > ASSESS_SHARE * self.budget.left:
                self._add(Candidate(f"assess {backbone}", "assessment", backbone, {}, stage="assessment",
                                    status="skipped",
                                    note=f"its feature pass (about {predicted:.0f} s) would take more than "
                                         f"{ASSESS_SHARE:.0%} of the {self.budget.left:.0f} s left"))
                continue
            assessment = assess_backbone(self.report, backbone, self.base.seed, self.control,
                                         self.callbacks.on_progress, self.base.image_size, ASSESS_IMAGES)
            if len(assessment.features.labels) == self._search_images():
                self.features[backbone] = assessment.features
            self.assessments.append(assessment)
        self.callbacks.on_progress("assess", len(self.backbones), len(self.backbones))
        self.assessments.sort(key=lambda a: (-round(a.probe_accuracy, 3), -a.logme))

    def _predicted_pass_s(self, backbone: str, views: int = 1) -> float:
        """Seconds for a feature pass of `backbone` over train + val (`views` times)."""
        return views * self._search_images() * self._seconds_per_image(backbone)

    def _seconds_per_image(self, backbone: str) -> float:
        """One image through `backbone`'s frozen layers: the first model's measured time per image (its
        feature pass dominates it), scaled by the ratio of single-image forward times; at least 0.75 of the
        single-image forward time (what a batched pass measured on Fashion-MNIST photos), for when the first
        model found its features cached."""
        first = self.candidates[0]
        measured = first.seconds / max(self._search_images(), 1) / self._forward_ms(first.backbone)
        return max(measured, FORWARD_TO_PASS / 1000) * self._forward_ms(backbone)

    def _search_images(self) -> int:
        return len(self.report.split("train")) + len(self.report.split("val"))

    def _forward_ms(self, backbone: str) -> float:
        if backbone not in self._forward:
            from engine.models.catalog import create_model
            from engine.search.assess import forward_ms
            self._forward[backbone] = forward_ms(create_model(backbone, 2, weights="random",
                                                              input_size=self.base.image_size))
        return self._forward[backbone]

    # -- 3. head recipes: screened inside the training split, the best ones as finalists -------------------
    def _head_search(self) -> None:
        """Head recipes until the deadline `_head_search_seconds` sets (their feature passes included); then
        the fitted head and the best screened recipe are trained as finalists."""
        deadline = time.monotonic() + self._head_search_seconds()
        self._open_study()
        self._search_heads(max(5.0, deadline - time.monotonic() - self._reserve_s()))
        self._fit_fitted_head()

    def _more_heads(self) -> None:
        """What the deeper candidate left (pruned early, or not worth starting) goes back to head recipes,
        keeping time to train a new best one and to finish; not once screening has stalled."""
        seconds = self.budget.left - 2 * self._reserve_s() - self._ensemble_seconds() - self._pseudo_seconds()
        if self._study is not None and not self._stalled and seconds > 5:
            self._search_heads(seconds)

    def _open_study(self) -> None:
        import optuna
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        searched = self._searched_backbones()
        self._full_features(searched)
        mirrored = self._add_mirrored_views(searched)
        self._train_features = {b: self.features[b].part(held_out=False) for b in searched}
        train = self._train_features[searched[0]]
        groups = near_duplicate_groups(train.views[0], train.labels)
        self._folds = stratified_folds(train.labels, usable_folds(train.labels, groups=groups), self.base.seed, groups)
        self._groups = int(groups.max()) + 1 if len(groups) else 0
        self._searched, self._mirrored = searched, mirrored
        labels = train.labels
        self._imbalanced = bool(np.bincount(labels).max() > 1.5 * np.bincount(labels).min())
        self._study = optuna.create_study(
            study_name=f"heads-{self.report.content_hash[:16]}-{self.base.seed}-{'+'.join(searched)}-{mirrored}",
            storage=f"sqlite:///{self.run_dir / STUDY_FILE}", load_if_exists=True, direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=self.base.seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=8, n_warmup_steps=1))
        if not self._study.trials:
            first = self.candidates[0].backbone
            self._study.enqueue_trial(self._default_params(first if first in searched else searched[0], mirrored))

    def _screening_protocol(self) -> str:
        k = int(self._folds.max()) + 1
        return (f"{k}-fold CV inside the training split, {self._groups} groups of near-identical {self.noun} "
                f"kept together (screening)")

    def _search_heads(self, seconds: float) -> None:
        import optuna
        folds = self._folds
        deadline = time.monotonic() + seconds

        def objective(trial):
            config = self._suggest(trial, self._searched, self._mirrored, self._imbalanced)
            if config.head == "mlp" and self._skip_mlp():
                raise optuna.TrialPruned()
            predicted = self._predicted_trial_s(config)
            if predicted is not None and predicted > deadline - time.monotonic():
                raise optuna.TrialPruned()           # it would overrun the time left for screening
            began = time.monotonic()
            scores = head_recipe_accuracy(
                self._train_features[config.backbone], config, folds, self._head_factory(config),
                self._dropout(config.backbone), self.control, lambda check, mean: self._prune(trial, check, mean))
            seconds_taken = time.monotonic() - began
            trial.set_user_attr("seconds_per_epoch", seconds_taken / max(config.epochs, 1))
            self._add(Candidate(f"head trial {trial.number}", "head", config.backbone, recipe_of(config),
                                stage="screening", score=scores.mean,
                                interval=list(wilson_interval(scores.correct, scores.count)),
                                scored_by=self._screening_protocol() + ("" if scores.complete else ", stopped early"),
                                seconds=seconds_taken, status="done" if scores.complete else "pruned"))
            if not scores.complete:
                raise optuna.TrialPruned()
            return scores.mean

        self._study.optimize(objective, n_trials=MAX_HEAD_TRIALS, timeout=max(1.0, seconds), catch=(),
                             callbacks=[self._stop_when_stalled])
        self._score_default()
        self._fit_best_head()

    def _cv_noise(self, accuracy: float) -> float:
        """One standard error of a cross-validated accuracy over the training images."""
        return float(np.sqrt(accuracy * (1 - accuracy) / max(len(self._folds), 1)))

    def _stop_when_stalled(self, study, trial) -> None:
        """Stops screening once the last STALL_TRIALS scored trials gained no more than one standard error
        over the best before them: what is left of the time goes to deeper training."""
        values = [t.value for t in study.trials if t.value is not None]
        if len(values) <= STALL_TRIALS:
            return
        before = max(values[:-STALL_TRIALS])
        if max(values[-STALL_TRIALS:]) <= before + self._cv_noise(before):
            self._stalled = True
            self.notes.append(f"head screening stopped after {len(values)} recipes: the last {STALL_TRIALS} gained "
                              f"less than one standard error ({self._cv_noise(before):.1%})")
            study.stop()

    def _skip_mlp(self) -> bool:
        """MLP heads cost 5-30x a linear head; they are screened only once LINEAR_FIRST linear heads spread by
        more than two standard errors (where no recipe of the head matters, its shape will not either)."""
        linear = [t.value for t in self._study.trials if t.value is not None and t.params.get("head") == "linear"]
        if len(linear) < LINEAR_FIRST:
            return True
        alike = max(linear) - min(linear) <= 2 * self._cv_noise(max(linear))
        if alike and self._mlp_skipped is None:
            self._mlp_skipped = self._add(Candidate(
                "MLP heads", "head", self._searched[0], {"head": "mlp"}, stage="screening", status="skipped",
                note=f"{len(linear)} linear head recipes scored within two standard errors of each other "
                     f"({min(linear):.1%}-{max(linear):.1%}): the head's recipe does not matter here"))
        return alike

    def _predicted_trial_s(self, config: TrainConfig) -> float | None:
        """A head recipe's screening time from the seconds per epoch of those screened before with the same
        head (None before the first)."""
        rates = [t.user_attrs["seconds_per_epoch"] for t in self._study.trials
                 if "seconds_per_epoch" in t.user_attrs and t.params.get("head") == config.head]
        return float(np.median(rates)) * config.epochs if rates else None

    def _score_default(self) -> None:
        """The default recipe's screening score: its trial's (enqueued first), or, when its backbone is not
        among those screened, its own cross-validation on the same folds (its features are cached)."""
        default = self.candidates[0]
        if default.screening is not None:
            return
        for trial in self._study.trials:
            if trial.value is not None and recipe_of(self._config_from_params(trial.params)) == default.recipe:
                default.screening = trial.value
                break
        else:
            config = replace(self.base, backbone=default.backbone)
            self._full_features([default.backbone])
            features = self.features[default.backbone].part(held_out=False)
            self._train_features.setdefault(default.backbone, features)
            default.screening = head_recipe_accuracy(features, config, self._folds, self._head_factory(config),
                                                     self._dropout(default.backbone), self.control).mean
        self._update(default)

    def _fit_best_head(self) -> None:
        """Trains the best screened recipe as a finalist, unless it already is one (the default, or fitted
        before)."""
        if not any(t.value is not None for t in self._study.trials):
            return
        best = self._study.best_trial
        config = self._config_from_params(best.params)
        trained = [c.recipe for c in self.candidates if c.kind == "head" and c.run_dir]
        if recipe_of(config) in trained:
            return
        earlier = [c for c in self.candidates if c.name.startswith("best head recipe") and c.stage == "final"]
        name = "best head recipe" if not earlier else f"best head recipe ({len(earlier) + 1})"
        self._compare_only_if_promising(self._fit_candidate(name, "head", config, screening=best.value))
        for candidate in earlier:            # one finalist per screening: the earlier best steps back
            candidate.stage, candidate.note = "screening", f"superseded by {name}, which screened better"
            self._update(candidate)

    def _compare_only_if_promising(self, candidate: Candidate) -> None:
        """A head is compared with the default recipe only when it screened better than the default by more
        than one standard error: otherwise it is not expected to be better on validation either, and a
        comparison that cannot change the answer only takes a share of the chance the other finalists need
        (Holm's correction). It stays a screening row, with its screening score. Every head is compared when
        screening is known not to carry over to the validation images (`_screening_misleads`)."""
        default = self.candidates[0]
        if candidate.status != "done" or default.screening is None or candidate.screening is None or \
                self._screening_misleads():
            return
        margin = self._cv_noise(default.screening)
        if candidate.screening > default.screening + margin:
            return
        count = len(self._folds)
        candidate.stage, candidate.score = "screening", candidate.screening
        candidate.interval = list(wilson_interval(round(candidate.screening * count), count))
        candidate.scored_by = self._screening_protocol()
        candidate.note = (f"screened within one standard error ({margin:.1%}) of the default recipe's "
                          f"{default.screening:.1%}: not compared on validation, where it had "
                          f"{candidate.val_accuracy:.1%}")
        self._update(candidate)

    def _fit_fitted_head(self) -> None:
        """The linear-probe literature's head as a finalist: logistic regression on the best backbone's
        features, solved to convergence, its L2 strength cross-validated inside the training split (with
        the mirrored images when screening had them)."""
        if any(c.name == "fitted head" for c in self.candidates):
            return
        flip = self._mirrored
        config = replace(self.base, backbone=self._searched[0], optimizer="lbfgs", head="linear",
                         augmentation="flip" if flip else "none", cached_views=2 if flip else 1,
                         tta="flip" if flip else "none", balance="loss" if self._imbalanced else "none")
        self._compare_only_if_promising(self._fit_candidate("fitted head", "head", config))

    def _head_search_seconds(self) -> float:
        """What is left after keeping the predicted time of DEEP_PLANNED_EPOCHS of the last blocks (pass
        included) on the best backbone for each of DEEP_MEMBERS seeds, and the ensemble's time; at least
        HEAD_MIN_SHARE of it: the last blocks beat the best head on both real sets measured (README), so
        they are planned first; what they do not use comes back to head recipes (_more_heads)."""
        left = self.budget.left
        config = self._deep_config(replace(self.base, backbone=self.assessments[0].backbone))
        pass_s, epoch_s = self._predict_deep_costs(config)
        members = DEEP_MEMBERS if self.ensembles else 1
        deep_s = members * (pass_s + DEEP_PLANNED_EPOCHS * epoch_s) + self._reserve_s() + \
            self._ensemble_seconds(extra=members + 1)
        return max(HEAD_MIN_SHARE * left, left - deep_s)

    def _reserve_s(self) -> float:
        """Kept for training a chosen head recipe as a run, and at the end for the winner's test evaluation."""
        return min(30.0, 0.1 * self.budget.seconds) + self._test_pass_s()

    def _test_pass_s(self) -> float:
        """The winner's evaluation on the test split (twice, for a mirrored view), kept inside the budget."""
        if not self.candidates:
            return 0.0
        return 2 * self._seconds_per_image(self.candidates[0].backbone) * len(self.report.split("test"))

    def _searched_backbones(self) -> list[str]:
        """The best SEARCHED_BACKBONES assessed backbones whose full feature pass is cached or takes at most
        ASSESS_SHARE of what is left (the best one always)."""
        searched = []
        for assessment in self.assessments:
            backbone = assessment.backbone
            cached = backbone in self.features or backbone == self.candidates[0].backbone
            if not searched or cached or self._predicted_pass_s(backbone) <= ASSESS_SHARE * self.budget.left:
                searched.append(backbone)
            if len(searched) == SEARCHED_BACKBONES:
                break
        return searched

    def _full_features(self, backbones: list[str]) -> None:
        for backbone in backbones:
            if backbone not in self.features:
                bundle = pretrained(self.report, backbone, self.base.image_size)
                self.features[backbone] = backbone_features(self.report, bundle, ("plain",), self.base.seed,
                                                            self.control, self.callbacks.on_progress)

    def _add_mirrored_views(self, searched: list[str]) -> bool:
        """Mirrored-image features (for flip training and flip TTA) when their pass takes at most a fifth of
        the budget left; True when every searched backbone has them."""
        if not self.mirrored_views:
            return False
        predicted = sum(self._predicted_pass_s(backbone) for backbone in searched)
        if predicted > self.budget.left / 5:
            return False
        for backbone in searched:
            bundle = pretrained(self.report, backbone, self.base.image_size)
            self.features[backbone] = backbone_features(self.report, bundle, ("plain", "mirrored"), self.base.seed,
                                                         self.control, self.callbacks.on_progress)
        return True

    def _default_params(self, backbone: str, mirrored: bool) -> dict:
        params = {"backbone": backbone, "head": self.base.head, "lr": self.base.lr,
                  "weight_decay": self.base.weight_decay, "label_smoothing": self.base.label_smoothing,
                  "epochs": self.base.epochs, "balance": "none"}
        if mirrored:
            params.update(flip=False, tta="none")
        return params

    def _suggest(self, trial, searched: list[str], mirrored: bool, imbalanced: bool) -> TrainConfig:
        params = {
            "backbone": trial.suggest_categorical("backbone", searched),
            "head": trial.suggest_categorical("head", ["linear", "mlp"]),
            "lr": trial.suggest_float("lr", 1e-4, 3e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-4, 0.3, log=True),
            "label_smoothing": trial.suggest_float("label_smoothing", 0.0, 0.2),
            "epochs": trial.suggest_int("epochs", min(5, self.base.epochs), 40),
            "balance": trial.suggest_categorical("balance", ["none", "loss"] if imbalanced else ["none"]),
        }
        if mirrored:
            params["flip"] = trial.suggest_categorical("flip", [False, True])
            params["tta"] = trial.suggest_categorical("tta", ["none", "flip"])
        return self._config_from_params(params)

    def _config_from_params(self, params: dict) -> TrainConfig:
        flip = bool(params.get("flip", False))
        return replace(self.base, backbone=params["backbone"], head=params["head"], lr=float(params["lr"]),
                       weight_decay=float(params["weight_decay"]),
                       label_smoothing=float(params["label_smoothing"]), epochs=int(params["epochs"]),
                       balance=params["balance"], augmentation="flip" if flip else "none",
                       cached_views=2 if flip else 1, tta=params.get("tta", "none"), freeze="head")

    @staticmethod
    def _prune(trial, check: int, mean: float) -> bool:
        """Optuna's median rule: stop a recipe whose held-out accuracy after the same share of its epochs
        is below the median of the earlier trials'."""
        trial.report(mean, check)
        return trial.should_prune()

    def _head_factory(self, config: TrainConfig):
        """Fresh heads as the Trainer builds them for `config` (the MLP's own dropout included)."""
        from engine.models.heads import head_dropout, make_head
        dim = int(self.features[config.backbone].views.shape[-1])
        classes, dropout = len(self.report.classes), head_dropout(self._architecture(config.backbone))
        return lambda: make_head(config.head, dim, classes, dropout)

    def _dropout(self, backbone: str) -> float:
        """The dropout the Trainer puts before the head on cached features (timm's drop_rate)."""
        return float(getattr(self._architecture(backbone), "drop_rate", 0.0) or 0.0)

    def _architecture(self, backbone: str):
        if backbone not in self._architectures:
            from engine.models.catalog import build_architecture
            self._architectures[backbone] = build_architecture(backbone, 2)
        return self._architectures[backbone]

    # -- 4. deeper: the last blocks on cached activations ---------------------------------------------
    def _deeper(self) -> None:
        """The last blocks with the best head recipe, then, when it finished and its epochs fit again (keeping
        time to choose an ensemble), the same recipe with another seed, as many of those epochs as fit (at
        least DEEP_EPOCHS[0]): a second member for `_ensemble` (a deep ensemble, Lakshminarayanan et al.
        2017), the cheapest variance reduction for fine-tuned blocks, which overfit a small training split
        within a few epochs (README). The second seed's costs are the first's, measured: its activations are
        cached, its epochs take as long."""
        head = self._best_head_run()
        if head is None:
            return
        recipe = {k: v for k, v in head.recipe.items() if k in TUNED and k != "optimizer"}   # the blocks train
        config = self._deep_config(replace(self.base, **recipe))
        members = DEEP_MEMBERS if self.ensembles else 1
        first = self._train_deep(self.deep_name, config, head, members)
        if first is None or first.status != "done" or members < 2:
            return
        epochs = json.loads(RunFolder(first.run_dir).history.read_text(encoding="utf-8"))
        measured = (0.0, float(np.median([e["epoch_time_s"] for e in epochs])))
        second = replace(config, epochs=int(first.recipe["epochs"]), seed=config.seed + 1)
        self._train_deep(f"{self.deep_name} (seed {second.seed})", second, head, 1, measured)

    def _train_deep(self, name: str, config: TrainConfig, head: Candidate, members: int,
                    measured: tuple[float, float] | None = None) -> Candidate | None:
        """Train a deeper candidate for as many epochs (DEEP_EPOCHS; at most config.epochs when its costs
        were `measured`: (pass s, epoch s)) as its costs say fit in its share of the time left (1/`members`:
        the seeds still planned share it); pruned when it falls behind the head."""
        pass_s, epoch_s = measured or self._predict_deep_costs(config)
        share = (self.budget.left - self._reserve_s() - self._ensemble_seconds(extra=members)) / members
        most = config.epochs if measured else DEEP_EPOCHS[1]
        fit = int(min(most, (share - pass_s) // max(PLAN_MARGIN * epoch_s, 1e-3)))
        if fit < DEEP_EPOCHS[0] and members > 1:          # too little for several: all the time to one
            return self._train_deep(name, config, head, 1, measured)
        if fit < DEEP_EPOCHS[0]:
            self._add(Candidate(name, "last-blocks", config.backbone, recipe_of(config), status="skipped",
                                note=f"predicted {pass_s + DEEP_EPOCHS[0] * epoch_s:.0f} s for {DEEP_EPOCHS[0]} "
                                     f"epochs; {self.budget.left:.0f} s left"))
            return None
        config = replace(config, epochs=fit)
        control = CandidateControl(self.control)
        guard = FallingBehind(control, head.val_accuracy or 0.0, config.epochs,
                              lambda: self.budget.left - self._reserve_s(),
                              noise_margin(head.val_accuracy or 0.0, len(self.report.split("val"))))
        candidate = self._fit_candidate(name, "last-blocks", config, [guard], control)
        if guard.reason:
            candidate.note = guard.reason
            self._update(candidate)
        return candidate

    # -- 6. an ensemble of finalists, chosen without looking at validation ----------------------------------
    def _ensemble(self) -> None:
        """The mean probability of up to MAX_MEMBERS finalists that see images alike (same backbone and input
        size), chosen before validation is read: the last blocks' seeds first (the deeper recipe), then the
        head finalists by their screening score. Written as one run (engine.search.ensemble) and judged as
        one more finalist."""
        members = self._ensemble_members()
        if len(members) < 2:
            return
        if self._ensemble_seconds() > self.budget.left - self._reserve_s():
            self._add(Candidate("ensemble", "ensemble", members[0].backbone, {}, status="skipped",
                                note=f"combining {len(members)} finalists would not fit in the "
                                     f"{self.budget.left:.0f} s left"))
            return
        from engine.search.ensemble import combine_runs
        from engine.training.evaluation import stored_probabilities
        began = time.monotonic()
        val = self.report.split("val")
        scored = [stored_probabilities(c.run_dir, val, "val") for c in members]
        if any(s is None for s in scored):
            self._add(Candidate("ensemble", "ensemble", members[0].backbone, {}, status="skipped",
                                note="the runs did not keep every validation image's probabilities "
                                     "(too many images x classes)"))
            return
        folder = self.run_dir / "candidates" / "ensemble"
        metrics = combine_runs(self.report, [c.run_dir for c in members], folder, self.control,
                               val_probabilities=[p for p, _ in scored])
        candidate = Candidate("ensemble", "ensemble", members[0].backbone, {"members": [c.name for c in members]},
                              seconds=time.monotonic() - began,
                              note="the mean probability of " + ", ".join(c.name for c in members),
                              val_accuracy=metrics["val_accuracy"], run_dir=str(folder))
        self._score_on_validation(candidate)
        self._add(candidate)
        seeds = [c for c in members if c.kind == "last-blocks"]
        if len(seeds) > 1:           # the blocks' seeds are one recipe: compared once, as their mean
            for seed in seeds:
                seed.stage, seed.note = "member", "a member of the ensemble, which is compared in its place"
                self._update(seed)

    def _ensemble_members(self) -> list[Candidate]:
        """Finalists of one backbone, in the order they join: the last blocks' runs, then heads by screening
        score (the fitted head's is its own cross-validation inside the training split). Not the incumbent:
        the ensemble is an alternative to it, and its epoch may have been picked on validation."""
        if not self.ensembles:
            return []
        runs = [c for c in self.candidates if c.stage == "final" and c.status == "done" and c.run_dir
                and c.kind != "ensemble" and "pseudo_label_threshold" not in c.recipe]   # members train on labels
        deep = [c for c in runs if c.kind == "last-blocks"]
        backbone = deep[0].backbone if deep else self._searched[0] if hasattr(self, "_searched") else None
        heads = [c for c in runs if c.kind == "head" and c.backbone == backbone and c is not self.candidates[0]]
        heads.sort(key=lambda c: -(c.screening if c.screening is not None else -1.0))
        return [*(c for c in deep if c.backbone == backbone), *heads][:MAX_MEMBERS]

    def _ensemble_seconds(self, extra: int = 0) -> float:
        """Predicted seconds of `_ensemble`: the candidates' validation probabilities are read from their
        runs (each fit keeps them), so loading and saving the chosen ones' weights and writing one run."""
        if not self.ensembles or not self.candidates:
            return 0.0
        count = min(MAX_MEMBERS, len(self._ensemble_members()) + extra)
        return count * LOAD_S if count >= 2 else 0.0

    def _deep_config(self, head_recipe: TrainConfig) -> TrainConfig:
        """The last blocks with a head recipe's backbone, head and class balancing, trained on plain and
        mirrored activations in turn (and predicting with both) unless the user turned augmentation off:
        horizontal flips are the standard augmentation when fine-tuning (timm's default), and the blocks
        have far more weights to overfit with than a head. Weight decay and label smoothing stay
        the starting point's (the fine-tuning defaults) rather than the head's: chosen for a head on frozen
        features, they regularised the blocks less (ELPV: 79.9 % against 81.9-83.2 % test, README)."""
        flip = self._augment or head_recipe.augmentation == "flip"
        return replace(head_recipe, freeze="last-n", freeze_blocks=DEEP_BLOCKS, lr=DEEP_LR,
                       weight_decay=self.base.weight_decay,
                       label_smoothing=self.base.label_smoothing, augmentation="flip" if flip else "none",
                       cached_views=2 if flip else 1, tta="flip" if flip else head_recipe.tta)

    def _best_head_run(self) -> Candidate | None:
        """The head run the last blocks start from: the best by screening (its recipe's backbone and head)."""
        runs = [c for c in self.candidates if c.kind == "head" and c.run_dir and c.status == "done"]
        return max(runs, key=lambda c: c.screening if c.screening is not None else -1.0) if runs else None

    def _predict_deep_costs(self, config: TrainConfig) -> tuple[float, float]:
        """(activation pass s, training epoch s) for `config`, from measured timings: the pass as the
        backbone's measured feature pass (the prefix is most of the network), an epoch from timing one
        training step of the trainable suffix on activations of the right shape."""
        from engine.training.timing import suffix_step_seconds
        views = 2 if config.augmentation == "flip" else 1
        pass_s = self._predicted_pass_s(config.backbone, views)
        step_s = suffix_step_seconds(config, len(self.report.classes))
        steps = -(-len(self.report.split("train")) // config.batch_size)
        val_s = step_s / 3 * -(-len(self.report.split("val")) // config.batch_size)
        return pass_s, steps * step_s + val_s

    # -- 6. pseudo-labels from an unlabelled pool ---------------------------------------------------------
    def _pseudo_labels(self) -> None:
        """The recipe that screened best, trained again with the pool's confident samples, when a head with
        them beat the labels alone on validation (engine.active.pseudo); a skipped row says why not."""
        base = self._best_head_run()
        if not self.unlabelled or base is None:
            return
        from engine.active.pseudo import PSEUDO_LABELS, pseudo_label_record, with_pseudo_labels
        began = time.monotonic()
        predicted = self._pseudo_seconds()
        if predicted > self.budget.left:
            self._add(Candidate("pseudo-labels", "head", base.backbone, {}, stage="screening", status="skipped",
                                note=f"its passes over the {self._pool_size} pool {self.noun} and a fit (about "
                                     f"{predicted:.0f} s) would overrun the {self.budget.left:.0f} s left"))
            return
        try:
            report, choice, pool = with_pseudo_labels(self.report, self.unlabelled, base.backbone,
                                                      seed=self.base.seed, control=self.control)
        except ValueError as exc:                   # nothing usable in the pool: said, the search goes on
            self._add(Candidate("pseudo-labels", "head", base.backbone, {}, stage="screening", status="skipped",
                                note=str(exc)))
            return
        self.notes.append(f"unlabelled pool: {pool.summary()}")
        if choice.threshold is None:
            self._add(Candidate("pseudo-labels", "head", base.backbone, {}, stage="screening", status="skipped",
                                seconds=time.monotonic() - began, note=choice.reason))
            return
        config = replace(self.base, **{**base.recipe, "balance": "loss"})
        candidate = self._fit_candidate(f"pseudo-labels {choice.threshold:g}", "head", config, report=report)
        candidate.recipe = {**candidate.recipe, "pseudo_label_threshold": choice.threshold}
        candidate.note = "; ".join(filter(None, [
            f"{base.name} with {len(choice.labels)} pool {self.noun} at probability {choice.threshold:g} or more "
            f"in its training split (a head with them: {choice.reason})", candidate.note]))
        if candidate.run_dir:
            write_json(Path(candidate.run_dir) / PSEUDO_LABELS, pseudo_label_record(self.report, choice, pool))
        self._update(candidate)

    def _pseudo_seconds(self) -> float:
        """Predicted seconds of `_pseudo_labels`: the frozen pass over the set and the pool for the choice, the
        same again for the fit (a new training split), and a fit as long as the first model's; 0 without a pool."""
        if not self.unlabelled or not self.candidates:
            return 0.0
        if self._pool_size is None:
            from engine.active.pool import labelled_keys, read_pool
            try:
                self._pool_size = len(read_pool(self.unlabelled, modalities.of(self.report),
                                                labelled=labelled_keys(self.report)).samples)
            except ValueError:
                self._pool_size = 0
        backbone = self.candidates[0].backbone
        return (2 * self._predicted_pass_s(backbone) * (1 + self._pool_size / max(self._search_images(), 1))
                + self.candidates[0].seconds)

    # -- what the user should know -----------------------------------------------------------------------
    def _warn_small_split(self) -> None:
        count = len(self.report.split("val"))
        if not count:
            self.warnings.append(f"there are no validation {self.noun}: nothing can judge the candidates "
                                 "honestly, so the search keeps the default recipe")
            return
        smallest = detectable_difference(count)
        if smallest > SMALL_SPLIT:
            self.warnings.append(
                f"the validation split has {count} {self.noun} ({100 / count:.1f} points each): a candidate must "
                f"be about {100 * smallest:.0f} points more accurate there before chance no longer explains it, "
                f"so the default recipe is kept unless one is that much better; more validation {self.noun} (your own "
                f"val/ folder or split column) make the choice sharper")

    def _screening_misleads(self) -> bool:
        """Cross-validation inside the training split against the validation images, for the default recipe:
        True when validation is clearly lower (the two come from different conditions)."""
        default = self.candidates[0] if self.candidates else None
        if default is None or default.screening is None or default.score is None:
            return False
        return clearly_lower(default.score, len(self.report.split("val")), default.screening,
                             len(self.report.split("train")))

    def _warn_shift(self) -> None:
        if self._screening_misleads():
            default = self.candidates[0]
            self.warnings.append(
                f"cross-validation inside the training {self.noun} gives the default recipe "
                f"{default.screening:.0%}, the validation {self.noun} {default.score:.0%}: they come from different "
                f"conditions (another session, camera or batch?). Scores inside the training {self.noun} do not "
                f"carry over to new ones; every candidate is judged on the validation {self.noun}")

    # -- the winner ---------------------------------------------------------------------------------
    def _decide(self) -> Candidate:
        """The incumbent (the default recipe) unless a finalist is better on the validation images by more
        than chance explains (engine.core.significance.decide)."""
        incumbent = self.candidates[0]
        finalists = [c for c in self.candidates[1:]
                     if c.stage == "final" and c.status == "done" and c.run_dir and c.score is not None]
        right = self._correct(incumbent)
        if not len(right):
            self.decision = Decision(None, [], "kept the default recipe: no validation images to judge by")
            return incumbent
        self.decision = decide(incumbent.name, right, {c.name: self._correct(c) for c in finalists}, self.noun)
        for comparison in self.decision.comparisons:
            candidate = next(c for c in finalists if c.name == comparison.name)
            candidate.comparison = comparison.to_dict()
            self._update(candidate)
        return next((c for c in finalists if c.name == self.decision.winner), incumbent)

    def _finish(self, status: str) -> SearchResult:
        if not self.candidates or not self.candidates[0].run_dir:
            raise Cancelled() if status == "cancelled" else RuntimeError("the search trained no model")
        winner = self._decide()
        self._warn_shift()
        winner.chosen = True
        self._update(winner)
        adopt_run(Path(winner.run_dir), self.run_dir)
        metrics = evaluate_test_split(self.run_dir, self.report, self.control) if status != "cancelled" else \
            json.loads(RunFolder(self.run_dir).metrics.read_text(encoding="utf-8"))
        leaderboard = [c.to_dict() for c in self.candidates]
        write_json(self.run_dir / LEADERBOARD, leaderboard)
        assessments = [a.to_dict() for a in self.assessments]
        write_json(self.run_dir / SEARCH_REPORT, {
            "status": status, "budget_s": self.budget.seconds, "seconds": round(self.budget.elapsed, 1),
            "phases_s": self.timings, "winner": winner.name, "decision": self.decision.reason,
            "warnings": self.warnings, "notes": self.notes, "assessments": assessments})
        config = json.loads(RunFolder(self.run_dir).config.read_text(encoding="utf-8"))
        return SearchResult(status, str(self.run_dir), config, winner.name, metrics, leaderboard, assessments,
                            self.budget.elapsed, self.decision.reason, list(self.warnings), list(self.notes))


def adopt_run(candidate: Path, run_dir: Path) -> None:
    """The winner's files become the run's own (copied; the candidates folder keeps every candidate)."""
    source, target = RunFolder(candidate), RunFolder(run_dir)
    for name in ("checkpoint", "metrics", "predictions", "history", "config"):
        path = getattr(source, name)
        if path.exists():
            with atomic_path(getattr(target, name)) as tmp:
                shutil.copyfile(path, tmp)
    from engine.active.pseudo import PSEUDO_LABELS
    if (candidate / PSEUDO_LABELS).exists():         # what a pseudo-labelled winner trained on
        with atomic_path(run_dir / PSEUDO_LABELS) as tmp:
            shutil.copyfile(candidate / PSEUDO_LABELS, tmp)


def noise_margin(accuracy: float, images: int, floor: float = 0.02) -> float:
    """How far below `accuracy` a candidate may be on `images` validation images before it counts as behind:
    one standard error of that accuracy (sqrt(p(1-p)/n): 3.9 points on 90 images, 2.1 on 393), at least
    `floor`. A fixed 2 points pruned the last blocks on a 90-image split where they went on to win."""
    return max(floor, float(np.sqrt(accuracy * (1 - accuracy) / max(images, 1))))


class FallingBehind(Callback):
    """Prunes a deeper candidate: once half its epochs are done, when its best validation accuracy is more
    than `margin` below the head recipe's (successive halving's rule with one rung), and at any time when
    its measured epochs predict it would overrun the time it has (`room()` seconds)."""

    def __init__(self, control: RunControl, to_beat: float, epochs: int, room: Callable[[], float],
                 margin: float = 0.02):
        self.control, self.to_beat, self.epochs, self.room = control, to_beat, epochs, room
        self.margin, self.best, self.reason = margin, 0.0, ""

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        self.best = max(self.best, float(logs.get("val_accuracy") or 0.0))
        left_epochs = self.epochs - epoch
        if left_epochs and logs.get("epoch_time_s", 0) * left_epochs > self.room():
            self._stop(f"stopped after epoch {epoch}: the remaining {left_epochs} epochs would overrun the budget")
        elif epoch >= self.epochs / 2 and left_epochs and self.best < self.to_beat - self.margin:
            self._stop(f"pruned after epoch {epoch}: {self.best:.1%} on validation, the head recipe has "
                       f"{self.to_beat:.1%}")

    def _stop(self, reason: str) -> None:
        self.reason = reason
        self.control.cancel()
