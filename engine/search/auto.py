"""Automatic recipe search within the time the user gives (`main.py train DATA --out RUN --auto`).

The order is chosen so that each phase is cheap before the next is tried, and a usable model exists early:
1. the default recipe (head-only on the default backbone): a first model in about a minute;
2. every available backbone assessed on frozen features (LogME, cross-validated linear probe);
3. head recipes searched on the cached features of the best backbones with Optuna (TPE sampler, median
   pruning over folds, SQLite storage in the run folder so a restarted search keeps its trials), each
   scored by k-fold cross-validation over train + val;
4. when the predicted time fits what is left, the last blocks trained on cached activations with the best
   head recipe, pruned when it falls behind; when they finish and the same epochs fit again, the same recipe
   with another seed (a second member for an ensemble);
5. whatever time the last blocks leave goes back to head recipes;
6. ensemble selection over the trained candidates on the validation split (their probabilities are kept by
   each fit): the mean probability of those that are more accurate together, kept when it beats them all.
The winner's run folder becomes RUN, and only then is the test split evaluated, once. `config.json` is a
plain TrainConfig: `main.py train DATA --config RUN/config.json` reproduces the model without a search.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from engine.core.callbacks import Callback, CallbackList
from engine.core.control import Cancelled, RunControl
from engine.core.files import atomic_path, write_json
from engine.core.runfolder import RunFolder
from engine.data.report import DatasetReport
from engine.search.assess import Assessment, assess_backbone, available_backbones, backbone_features, pretrained
from engine.search.crossval import FeatureViews, head_recipe_accuracy, stratified_folds, usable_folds
from engine.training.config import TrainConfig
from engine.training.evaluation import evaluate_test_split
from engine.training.datasets import trainer_class

DEFAULT_BUDGET_S = 600.0
ASSESS_SHARE = 0.3              # a backbone is assessed when its feature pass takes at most this share of the rest
ASSESS_IMAGES = 600             # backbones are compared on a stratified sample of this many train + val images
HEAD_MIN_SHARE = 0.15          # head recipes get at least this share of what is left after the assessment
SEARCHED_BACKBONES = 2          # head recipes are searched on the features of the best two backbones
MAX_HEAD_TRIALS = 100
DEEP_BLOCKS = 2                 # the last-blocks candidate: measured best depth on ELPV (README)
DEEP_LR = 1e-3
DEEP_EPOCHS = (4, 10)           # fewest worth starting, most it gets (ELPV: best on validation by epoch 3-5)
DEEP_PLANNED_EPOCHS = 10        # the time kept for the last blocks before head recipes are searched
DEEP_MEMBERS = 2                # last-blocks candidates (seeds) planned, for an ensemble of them
MAX_MEMBERS = 3                 # most candidates an ensemble averages
LOAD_S = 2.0                    # per candidate: reading its probabilities, loading and saving its weights
LEADERBOARD = "leaderboard.json"
SEARCH_REPORT = "search.json"
STUDY_FILE = "search.db"
TUNED = ("backbone", "head", "lr", "weight_decay", "label_smoothing", "epochs", "balance", "augmentation",
         "tta", "freeze", "freeze_blocks")
"""The TrainConfig fields a search chooses; every other field keeps the user's (or the default) value."""


@dataclass
class Candidate:
    """One leaderboard row."""

    name: str
    kind: str                        # 'head' | 'last-blocks'
    backbone: str
    recipe: dict
    score: float | None = None       # accuracy: cross-validated (head) or on the validation split
    score_std: float | None = None
    scored_by: str = ""
    seconds: float = 0.0
    status: str = "done"             # 'done' | 'pruned' | 'skipped' | 'cancelled'
    note: str = ""
    val_accuracy: float | None = None   # of its full fit, when it was trained as a run
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

    def __init__(self, report: DatasetReport, run_dir: str | Path, budget_s: float = DEFAULT_BUDGET_S,
                 base: TrainConfig | None = None, callbacks: list[Callback] | None = None,
                 control: RunControl | None = None, backbones: list[str] | None = None):
        self.report = report
        self.run_dir = Path(run_dir)
        # head-only on cached features: with one view 'light' augmentation is not applied, so 'none' says
        # the same plainly and lets the default recipe and the search's first trial be one recipe
        self._augment = (base or TrainConfig()).augmentation != "none"     # the user's choice, for the blocks
        self.base = replace(base or TrainConfig(), freeze="head", recipe="single", frozen_parameters=None,
                            augmentation="none", cached_views=1)
        self.base.validate()
        self.budget = Budget(budget_s)
        self.callbacks = CallbackList(callbacks or [])
        self.control = control or RunControl()
        self.backbones = backbones or available_backbones()
        self.candidates: list[Candidate] = []
        self.assessments: list[Assessment] = []
        self.features: dict[str, FeatureViews] = {}
        self.timings: dict[str, float] = {}
        self._architectures: dict = {}
        self._forward: dict[str, float] = {}
        self._study = None                 # the Optuna study of head recipes, once opened

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

    # -- 1. a first model -------------------------------------------------------------------------
    def _default_fit(self) -> None:
        config = replace(self.base, backbone=self.backbones[0] if self.base.backbone not in self.backbones
                         else self.base.backbone)
        self._fit_candidate("default recipe", "head", config)

    def _fit_candidate(self, name: str, kind: str, config: TrainConfig, callbacks=(), control=None,
                       score: tuple[float, float] | None = None, scored_by: str = "") -> Candidate:
        """Train `config` as a run in candidates/NAME (no test split); its validation accuracy is kept."""
        began = time.monotonic()
        folder = self.run_dir / "candidates" / name.replace(" ", "-")
        trainer = trainer_class(self.report)(self.report, config, folder, [*self.callbacks.callbacks, *callbacks],
                                             control or self.control, evaluate_test=False)
        result = trainer.fit()
        if result.status == "cancelled" and self.control.cancelled:
            raise Cancelled()
        val = result.metrics.get("val_accuracy")
        status = "pruned" if result.status == "cancelled" else "done"
        return self._add(Candidate(
            name, kind, config.backbone, recipe_of(config), score[0] if score else val,
            score[1] if score else None, scored_by or "validation split", time.monotonic() - began, status,
            "; ".join(trainer.path_notes), val, str(folder) if result.checkpoint else None))

    # -- 2. which backbone knows these images -----------------------------------------------------------
    def _assess(self) -> None:
        """Each backbone in turn on a stratified sample of ASSESS_IMAGES, while its predicted feature pass
        takes at most ASSESS_SHARE of what is left (the rest is for the search and deeper candidates)."""
        for index, backbone in enumerate(self.backbones):
            self.callbacks.on_progress("assess", index, len(self.backbones))
            predicted = self._predicted_pass_s(backbone) * min(1.0, ASSESS_IMAGES / self._search_images())
            if self.assessments and predicted > ASSESS_SHARE * self.budget.left:
                self._add(Candidate(f"assess {backbone}", "assessment", backbone, {}, status="skipped",
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
        """Seconds for a feature pass of `backbone` over train + val: the first model's measured time per
        image (its feature pass dominates it), scaled by the ratio of single-image forward times."""
        first = self.candidates[0]
        images = self._search_images()
        per_image = first.seconds / max(images, 1)
        return views * images * per_image * self._forward_ms(backbone) / self._forward_ms(first.backbone)

    def _search_images(self) -> int:
        return len(self.report.split("train")) + len(self.report.split("val"))

    def _forward_ms(self, backbone: str) -> float:
        if backbone not in self._forward:
            from engine.models.catalog import create_model
            from engine.search.assess import forward_ms
            self._forward[backbone] = forward_ms(create_model(backbone, 2, weights="random",
                                                              input_size=self.base.image_size))
        return self._forward[backbone]

    # -- 3. head recipes, cross-validated -------------------------------------------------------------
    def _head_search(self) -> None:
        """Head recipes until the deadline `_head_search_seconds` sets (their feature passes included); the
        best one is then trained as a run."""
        deadline = time.monotonic() + self._head_search_seconds()
        self._open_study()
        self._search_heads(max(5.0, deadline - time.monotonic() - self._reserve_s()))

    def _more_heads(self) -> None:
        """What the deeper candidate left (pruned early, or not worth starting) goes back to head recipes,
        keeping time to train a new best one and to finish."""
        seconds = self.budget.left - 2 * self._reserve_s() - self._ensemble_seconds()
        if self._study is not None and seconds > 5:
            self._search_heads(seconds)

    def _open_study(self) -> None:
        import optuna
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        searched = self._searched_backbones()
        self._full_features(searched)
        mirrored = self._add_mirrored_views(searched)
        labels = self.features[searched[0]].labels
        self._folds = stratified_folds(labels, usable_folds(labels), self.base.seed)
        self._searched, self._mirrored = searched, mirrored
        self._imbalanced = bool(np.bincount(labels).max() > 1.5 * np.bincount(labels).min())
        self._study = optuna.create_study(
            study_name=f"heads-{self.report.content_hash[:16]}-{self.base.seed}-{'+'.join(searched)}-{mirrored}",
            storage=f"sqlite:///{self.run_dir / STUDY_FILE}", load_if_exists=True, direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=self.base.seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=8, n_warmup_steps=1))
        if not self._study.trials:
            first = self.candidates[0].backbone
            self._study.enqueue_trial(self._default_params(first if first in searched else searched[0], mirrored))

    def _search_heads(self, seconds: float) -> None:
        import optuna
        folds, k = self._folds, int(self._folds.max()) + 1

        def objective(trial):
            config = self._suggest(trial, self._searched, self._mirrored, self._imbalanced)
            began = time.monotonic()
            scores = head_recipe_accuracy(
                self.features[config.backbone], config, folds, self._head_factory(config),
                self._dropout(config.backbone), self.control, lambda check, mean: self._prune(trial, check, mean))
            self._add(Candidate(f"head trial {trial.number}", "head", config.backbone, recipe_of(config),
                                scores.mean, scores.std, f"{k}-fold CV" if scores.complete else
                                f"{k}-fold CV, stopped early", time.monotonic() - began,
                                "done" if scores.complete else "pruned"))
            if not scores.complete:
                raise optuna.TrialPruned()
            return scores.mean

        self._study.optimize(objective, n_trials=MAX_HEAD_TRIALS, timeout=max(1.0, seconds), catch=())
        self._score_default(f"{k}-fold CV")
        self._fit_best_head(f"{k}-fold CV")

    def _score_default(self, scored_by: str) -> None:
        """The default recipe, scored the same way as every other (its trial was enqueued first)."""
        default = self.candidates[0]
        if default.scored_by == scored_by:
            return
        for trial in self._study.trials:
            if trial.value is not None and recipe_of(self._config_from_params(trial.params)) == default.recipe:
                default.score, default.scored_by = trial.value, scored_by
                self.callbacks.on_candidate(default.to_dict())
                return

    def _fit_best_head(self, scored_by: str) -> None:
        """Trains the best recipe so far as a run, unless it already is one (the default, or fitted before)."""
        if not any(t.value is not None for t in self._study.trials):
            return
        best = self._study.best_trial
        config = self._config_from_params(best.params)
        trained = [c.recipe for c in self.candidates if c.kind == "head" and c.run_dir]
        if recipe_of(config) not in trained:
            name = "best head recipe" if len(trained) < 2 else f"best head recipe ({len(trained)})"
            self._fit_candidate(name, "head", config, score=(best.value, None), scored_by=scored_by)

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
        return min(30.0, 0.1 * self.budget.seconds)

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
        """The last blocks with the best head recipe, then, when it finished and the same epochs fit again
        (keeping time to choose an ensemble), the same recipe with another seed: a second member for
        `_ensemble` (a deep ensemble, Lakshminarayanan et al. 2017), the cheapest variance reduction for
        fine-tuned blocks, which overfit a small training split within a few epochs (README)."""
        head = self._best_head_run()
        if head is None:
            return
        config = self._deep_config(replace(self.base, **{k: v for k, v in head.recipe.items() if k in TUNED}))
        members = DEEP_MEMBERS if self.ensembles else 1
        first = self._train_deep(self.deep_name, config, head, members)
        if first is None or first.status != "done" or members < 2:
            return
        second = replace(config, epochs=int(first.recipe["epochs"]), seed=config.seed + 1)
        self._train_deep(f"{self.deep_name} (seed {second.seed})", second, head, 1, fixed_epochs=True)

    def _train_deep(self, name: str, config: TrainConfig, head: Candidate, members: int,
                    fixed_epochs: bool = False) -> Candidate | None:
        """Train a deeper candidate for as many epochs (DEEP_EPOCHS) as its measured costs say fit in its
        share of the time left (1/`members`: the seeds still planned share it), exactly config.epochs with
        `fixed_epochs`; pruned when it falls behind the head."""
        pass_s, epoch_s = self._predict_deep_costs(config)
        share = (self.budget.left - self._reserve_s() - self._ensemble_seconds(extra=members)) / members
        fit = int(min(DEEP_EPOCHS[1], (share - pass_s) // max(epoch_s, 1e-3)))
        wanted = config.epochs if fixed_epochs else DEEP_EPOCHS[0]
        if fit < wanted and members > 1:          # too little for several: all the time to one
            return self._train_deep(name, config, head, 1, fixed_epochs)
        if fit < wanted:
            self._add(Candidate(name, "last-blocks", config.backbone, recipe_of(config), status="skipped",
                                note=f"predicted {pass_s + wanted * epoch_s:.0f} s for {wanted} epochs; "
                                     f"{self.budget.left:.0f} s left"))
            return None
        if not fixed_epochs:
            config = replace(config, epochs=fit)
        control = CandidateControl(self.control)
        guard = FallingBehind(control, head.val_accuracy or 0.0, config.epochs, self.budget,
                              noise_margin(head.val_accuracy or 0.0, len(self.report.split("val"))))
        candidate = self._fit_candidate(name, "last-blocks", config, [guard], control)
        if guard.reason:
            candidate.note = guard.reason
            self.callbacks.on_candidate(candidate.to_dict())
        return candidate

    # -- 6. an ensemble of the trained candidates ------------------------------------------------------
    def _ensemble(self) -> None:
        """Ensemble selection (Caruana et al. 2004) over the trained candidates that see images alike (same
        backbone and input size): the mean probability of those that raise validation accuracy together,
        trained as nothing new, written as one run (engine.search.ensemble). Kept only when it beats every
        single candidate on validation (`choose_winner`)."""
        pool = self._ensemble_pool()
        if len(pool) < 2:
            return
        if self._ensemble_seconds() > self.budget.left - self._reserve_s():
            self._add(Candidate("ensemble", "ensemble", pool[0].backbone, {}, status="skipped",
                                note=f"scoring {len(pool)} candidates on validation would not fit in the "
                                     f"{self.budget.left:.0f} s left"))
            return
        from engine.search.ensemble import combine_runs, forward_selection
        from engine.training.evaluation import stored_probabilities
        began = time.monotonic()
        val = self.report.split("val")
        scored = [stored_probabilities(c.run_dir, val, "val") for c in pool]
        if any(s is None for s in scored):
            self._add(Candidate("ensemble", "ensemble", pool[0].backbone, {}, status="skipped",
                                note="the runs did not keep every validation image's probabilities "
                                     "(too many images x classes)"))
            return
        chosen = [pool[i] for i in forward_selection([p for p, _ in scored], scored[0][1], MAX_MEMBERS)]
        if len(chosen) < 2:
            self._add(Candidate("ensemble", "ensemble", pool[0].backbone, {}, status="skipped",
                                seconds=time.monotonic() - began,
                                note=f"no mean of {', '.join(c.name for c in pool)} was more accurate on "
                                     f"validation than {chosen[0].name} alone"))
            return
        folder = self.run_dir / "candidates" / "ensemble"
        metrics = combine_runs(self.report, [c.run_dir for c in chosen], folder, self.control,
                               val_probabilities=[scored[pool.index(c)][0] for c in chosen])
        self._add(Candidate(
            "ensemble", "ensemble", chosen[0].backbone, {"members": [c.name for c in chosen]},
            metrics["val_accuracy"], None, "validation split", time.monotonic() - began,
            note="the mean probability of " + ", ".join(c.name for c in chosen),
            val_accuracy=metrics["val_accuracy"], run_dir=str(folder)))

    def _ensemble_pool(self) -> list[Candidate]:
        """Trained candidates with a validation accuracy whose backbone and input size match the best one's
        (an ensemble's members share one input), best first."""
        runs = sorted((c for c in self.candidates if c.run_dir and c.kind != "ensemble"
                       and c.val_accuracy is not None), key=lambda c: -c.val_accuracy)
        if not runs:
            return []
        same = lambda c: c.backbone == runs[0].backbone      # noqa: E731 - the search keeps one image size
        return [c for c in runs if same(c)] if self.ensembles else []

    def _ensemble_seconds(self, extra: int = 0) -> float:
        """Predicted seconds of `_ensemble`: the candidates' validation probabilities are read from their
        runs (each fit keeps them), so loading and saving the chosen ones' weights and writing one run."""
        if not self.ensembles or not self.candidates:
            return 0.0
        count = len(self._ensemble_pool()) + extra
        return count * LOAD_S if count >= 2 else 0.0

    def _deep_config(self, head_recipe: TrainConfig) -> TrainConfig:
        """The last blocks with a head recipe's backbone, head and class balancing, trained on plain and
        mirrored activations in turn (and predicting with both) unless the user turned augmentation off:
        horizontal flips are the standard augmentation when fine-tuning (timm's default), and the blocks
        have far more weights to overfit with than a head. Weight decay and label smoothing stay the
        starting point's (the fine-tuning defaults) rather than the head's: chosen for a head on frozen
        features, they regularised the blocks less (ELPV: 79.9 % against 81.9-83.2 % test, README)."""
        flip = self._augment or head_recipe.augmentation == "flip"
        return replace(head_recipe, freeze="last-n", freeze_blocks=DEEP_BLOCKS, lr=DEEP_LR,
                       weight_decay=self.base.weight_decay, label_smoothing=self.base.label_smoothing,
                       augmentation="flip" if flip else "none", cached_views=2 if flip else 1,
                       tta="flip" if flip else head_recipe.tta)

    def _best_head_run(self) -> Candidate | None:
        runs = [c for c in self.candidates if c.kind == "head" and c.run_dir and c.score is not None]
        return max(runs, key=lambda c: c.score) if runs else None

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

    # -- the winner ---------------------------------------------------------------------------------
    def _finish(self, status: str) -> SearchResult:
        runs = [c for c in self.candidates if c.run_dir]
        if not runs:
            raise Cancelled() if status == "cancelled" else RuntimeError("the search trained no model")
        winner = choose_winner(runs)
        winner.chosen = True
        self.callbacks.on_candidate(winner.to_dict())
        adopt_run(Path(winner.run_dir), self.run_dir)
        metrics = evaluate_test_split(self.run_dir, self.report, self.control) if status != "cancelled" else \
            json.loads(RunFolder(self.run_dir).metrics.read_text(encoding="utf-8"))
        leaderboard = [c.to_dict() for c in self.candidates]
        write_json(self.run_dir / LEADERBOARD, leaderboard)
        assessments = [a.to_dict() for a in self.assessments]
        write_json(self.run_dir / SEARCH_REPORT, {
            "status": status, "budget_s": self.budget.seconds, "seconds": round(self.budget.elapsed, 1),
            "phases_s": self.timings, "winner": winner.name, "assessments": assessments})
        config = json.loads(RunFolder(self.run_dir).config.read_text(encoding="utf-8"))
        return SearchResult(status, str(self.run_dir), config, winner.name, metrics, leaderboard, assessments,
                            self.budget.elapsed)


def choose_winner(runs: list[Candidate]) -> Candidate:
    """Among trained candidates: the head recipes compare by cross-validated score (the best one was
    trained); a deeper candidate wins only with a higher validation accuracy than the best head's run
    (the same images), ties going to the cheaper head."""
    heads = [c for c in runs if c.kind == "head"]
    best_head = max(heads, key=lambda c: ("CV" in c.scored_by, c.score if c.score is not None else -1),
                    default=None)
    deeper = [c for c in runs if c.kind != "head" and c.val_accuracy is not None]
    best_deep = max(deeper, key=lambda c: c.val_accuracy) if deeper else None
    if best_head is None:
        return best_deep
    if best_deep is not None and best_deep.val_accuracy > (best_head.val_accuracy or 0.0):
        return best_deep
    return best_head


def adopt_run(candidate: Path, run_dir: Path) -> None:
    """The winner's files become the run's own (copied; the candidates folder keeps every candidate)."""
    source, target = RunFolder(candidate), RunFolder(run_dir)
    for name in ("checkpoint", "metrics", "predictions", "history", "config"):
        path = getattr(source, name)
        if path.exists():
            with atomic_path(getattr(target, name)) as tmp:
                shutil.copyfile(path, tmp)


def noise_margin(accuracy: float, images: int, floor: float = 0.02) -> float:
    """How far below `accuracy` a candidate may be on `images` validation images before it counts as behind:
    one standard error of that accuracy (sqrt(p(1-p)/n): 3.9 points on 90 images, 2.1 on 393), at least
    `floor`. A fixed 2 points pruned the last blocks on a 90-image split where they went on to win."""
    return max(floor, math.sqrt(accuracy * (1 - accuracy) / max(images, 1)))


class FallingBehind(Callback):
    """Prunes a deeper candidate: once half its epochs are done, when its best validation accuracy is more
    than `margin` below the head recipe's (successive halving's rule with one rung), and at any time when
    its measured epochs predict it would overrun the budget."""

    def __init__(self, control: RunControl, to_beat: float, epochs: int, budget: Budget,
                 margin: float = 0.02):
        self.control, self.to_beat, self.epochs, self.budget = control, to_beat, epochs, budget
        self.margin, self.best, self.reason = margin, 0.0, ""

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        self.best = max(self.best, float(logs.get("val_accuracy") or 0.0))
        left_epochs = self.epochs - epoch
        if left_epochs and logs.get("epoch_time_s", 0) * left_epochs > self.budget.left:
            self._stop(f"stopped after epoch {epoch}: the remaining {left_epochs} epochs would overrun the budget")
        elif epoch >= self.epochs / 2 and left_epochs and self.best < self.to_beat - self.margin:
            self._stop(f"pruned after epoch {epoch}: {self.best:.1%} on validation, the head recipe has "
                       f"{self.to_beat:.1%}")

    def _stop(self, reason: str) -> None:
        self.reason = reason
        self.control.cancel()
