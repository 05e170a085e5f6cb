"""Backbone assessment and the recipe search: LogME against the closed-form evidence, stratified
cross-validation, the search's budget, cancel, winner and reproducibility, on real models and images."""
import json
import time

import numpy as np
import pytest
import torch

from engine.core.callbacks import Callback
from engine.core.control import RunControl
from engine.data.scan import scan_dataset
from engine.search.assess import assess_backbones, assessment_sample, summary
from engine.search.auto import Candidate, RecipeSearch, choose_winner, noise_margin, parse_budget
from engine.search.crossval import (FeatureViews, head_recipe_accuracy, linear_probe_accuracy, stratified_folds,
                                    usable_folds)
from engine.search.logme import logme_score, maximize_evidence
from engine.training.config import TrainConfig
from engine.training.trainer import Trainer
from tests.conftest import write_colour_dataset

LITE0 = "efficientnet_lite0"


# -- LogME -----------------------------------------------------------------------------------------
def gaussian_log_evidence(features, y, alpha, beta):
    """log N(y; 0, I/beta + F F^T/alpha): the evidence computed directly, without the paper's algebra."""
    n = len(y)
    covariance = np.eye(n) / beta + features @ features.T / alpha
    _, log_det = np.linalg.slogdet(covariance)
    return -0.5 * y @ np.linalg.solve(covariance, y) - 0.5 * log_det - n / 2 * np.log(2 * np.pi)


@pytest.mark.parametrize("n, d", [(30, 5), (8, 20)])     # more samples than features, and fewer
def test_logme_evidence_matches_the_closed_form_and_is_a_maximum(n, d):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(n, d))
    y = (rng.random(n) > 0.5).astype(float)
    u, s, _ = np.linalg.svd(features, full_matrices=False)
    evidence = maximize_evidence(u, s, y, d)
    direct = gaussian_log_evidence(features, y, evidence.alpha, evidence.beta)
    assert evidence.log_evidence * n == pytest.approx(direct, rel=1e-9)
    if n < d:
        return       # with more features than samples beta can grow without end; the score is still exact
    for scale_alpha, scale_beta in ((1.3, 1), (0.7, 1), (1, 1.3), (1, 0.7)):
        nearby = gaussian_log_evidence(features, y, evidence.alpha * scale_alpha, evidence.beta * scale_beta)
        assert nearby <= direct + 1e-6       # the fixed point maximises the evidence


def test_logme_hand_computed_small_case():
    """N=3, D=1, F=[1,1,1]^T, y=[1,1,0], solved by hand: F^T F=3, F^T y=2; with t=beta/(alpha+3 beta) the
    mean weight is m=2t, gamma=3t, |Fm-y|^2=2-8t+12t^2; the updates alpha=gamma/m^2, beta=(N-gamma)/|Fm-y|^2
    meet at t=1/4: alpha=beta=3, m=1/2, |Fm-y|^2=3/4. The evidence there is
    D/2 log a + N/2 log b - 1/2 log(a + 3b) - b/2 * 3/4 - a/2 * 1/4 - N/2 log 2pi."""
    u, s, _ = np.linalg.svd(np.ones((3, 1)), full_matrices=False)
    evidence = maximize_evidence(u, s, np.array([1.0, 1.0, 0.0]), 1)
    assert evidence.alpha == pytest.approx(3, rel=1e-3) and evidence.beta == pytest.approx(3, rel=1e-3)
    by_hand = 0.5 * np.log(3) + 1.5 * np.log(3) - 0.5 * np.log(12) - 1.5 * 0.75 - 1.5 * 0.25 - 1.5 * np.log(2 * np.pi)
    assert evidence.log_evidence * 3 == pytest.approx(by_hand, rel=1e-5)


def test_logme_prefers_features_that_carry_the_labels():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 300)
    informative = rng.normal(size=(300, 16))
    informative[:, :3] += np.eye(3)[labels] * 3
    assert logme_score(informative, labels) > logme_score(rng.normal(size=(300, 16)), labels)


# -- cross-validation ----------------------------------------------------------------------------------
def test_stratified_folds_keep_class_proportions_and_hold_each_sample_out_once():
    labels = np.array([0] * 50 + [1] * 20 + [2] * 10)
    folds = stratified_folds(labels, 5, seed=3)
    assert sorted(np.bincount(folds)) == [16] * 5
    for fold in range(5):
        assert np.bincount(labels[folds == fold], minlength=3).tolist() == [10, 4, 2]
    assert usable_folds(np.array([0, 0, 0, 1, 1, 1])) == 3
    assert usable_folds(np.array([0] * 40 + [1] * 40)) == 5


def test_assessment_sample_keeps_class_proportions_and_every_class():
    from engine.data.report import Sample
    labels = [0] * 700 + [1] * 280 + [2] * 3
    samples = [Sample(path=f"{i}.png", label=label, split="train") for i, label in enumerate(labels)]
    chosen = assessment_sample(samples, 200, seed=1)
    counts = np.bincount([s.label for s in chosen])
    assert counts.tolist() == [142, 57, 3]            # 200 in proportion; the rare class kept whole (CV folds)
    assert [s.path for s in chosen] == [s.path for s in samples if s in chosen]     # in their order
    assert chosen == assessment_sample(samples, 200, seed=1) != assessment_sample(samples, 200, seed=2)


def separable_views(n=120, d=32, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    features = rng.normal(size=(n, d)).astype(np.float32)
    features[:, :classes] += np.eye(classes, dtype=np.float32)[labels] * 2.5
    return FeatureViews(torch.from_numpy(features)[None], labels)


def test_linear_probe_and_head_recipes_are_scored_on_held_out_folds():
    data = separable_views()
    folds = stratified_folds(data.labels, 5)
    accuracy, spread = linear_probe_accuracy(data.views[0], data.labels, folds)
    assert 0.85 < accuracy <= 1.0 and spread < 0.2
    from engine.models.heads import make_head
    good = TrainConfig(lr=1e-2, epochs=15, batch_size=16)
    starved = TrainConfig(lr=1e-6, epochs=1, batch_size=16)
    make = lambda: make_head("linear", 32, 3)      # noqa: E731
    good_scores = head_recipe_accuracy(data, good, folds, make, 0.0)
    starved_scores = head_recipe_accuracy(data, starved, folds, make, 0.0)
    assert len(good_scores.scores) == len(starved_scores.scores) == 5
    assert good_scores.mean > starved_scores.mean + 0.3     # CV tells a working recipe from a broken one


def test_pruned_recipe_stops_at_the_check_that_asked():
    data = separable_views()
    from engine.models.heads import make_head
    checks = []
    scores = head_recipe_accuracy(data, TrainConfig(epochs=8), stratified_folds(data.labels, 5),
                                  lambda: make_head("mlp", 32, 3), 0.0,
                                  report=lambda check, mean: checks.append(check) or check == 1)
    assert checks == [0, 1] and not scores.complete and len(scores.scores) == 5


def test_fold_heads_train_like_separate_heads():
    """Stacking the folds' heads changes nothing: each fold's stacked head equals a head trained alone
    on that fold's images with the same batches (checked through its held-out accuracy at one fold)."""
    from engine.models.heads import make_head
    from engine.search.crossval import FoldHeads
    data = separable_views(n=60)
    folds = stratified_folds(data.labels, 2)
    config = TrainConfig(lr=1e-2, epochs=3, batch_size=8, label_smoothing=0.1, balance="loss")
    torch.manual_seed(0)
    heads = [make_head("linear", 32, 3) for _ in range(2)]
    alone = [make_head("linear", 32, 3) for _ in range(2)]
    for head, twin in zip(heads, alone):
        twin.load_state_dict(head.state_dict())
    stacked = FoldHeads(data, folds, config, heads, 0.0)
    torch.manual_seed(1)
    order = stacked._epoch_order(min(len(i) for i in stacked.train_index))
    loss = stacked._loss(stacked.forward(stacked.params, stacked.buffers, data.views[0][order]),
                         stacked.labels[order])
    loss.backward()
    weights = stacked.weights
    for fold, twin in enumerate(alone):
        criterion = torch.nn.CrossEntropyLoss(weight=weights, label_smoothing=0.1)
        criterion(twin(data.views[0][order[fold]]), stacked.labels[order[fold]]).backward()
        assert torch.allclose(stacked.params["weight"].grad[fold], twin.weight.grad, atol=1e-6)


def test_winner_deeper_only_when_it_beats_the_head_on_validation():
    head = Candidate("best head recipe", "head", LITE0, {}, score=0.80, scored_by="5-fold CV", val_accuracy=0.78,
                     run_dir="a")
    default = Candidate("default recipe", "head", LITE0, {}, score=0.90, scored_by="validation split",
                        val_accuracy=0.90, run_dir="b")
    deep_worse = Candidate("last 2 blocks", "last-blocks", LITE0, {}, val_accuracy=0.78, run_dir="c")
    deep_better = Candidate("last 2 blocks", "last-blocks", LITE0, {}, val_accuracy=0.83, run_dir="d")
    assert choose_winner([default, head]) is head          # a CV score beats a validation-only score
    assert choose_winner([default, head, deep_worse]) is head       # ties go to the cheaper head
    assert choose_winner([default, head, deep_better]) is deep_better


def test_deeper_candidates_are_pruned_only_beyond_the_validation_noise():
    assert noise_margin(0.84, 90) == pytest.approx(0.0386, abs=1e-4)     # 90 images: ±3.9 points
    assert noise_margin(0.77, 393) == pytest.approx(0.0212, abs=1e-4)
    assert noise_margin(0.99, 5000) == 0.02                                # never below the floor


@pytest.mark.parametrize("text, seconds", [("10m", 600), ("90s", 90), ("1h", 3600), ("45", 45), ("1.5m", 90)])
def test_parse_budget(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["ten minutes", "5s", "-3m", ""])
def test_parse_budget_refuses_nonsense(text):
    with pytest.raises(ValueError):
        parse_budget(text)


# -- on real images ------------------------------------------------------------------------------------
@pytest.fixture
def colours(tmp_path):
    return scan_dataset(write_colour_dataset(tmp_path / "colours", per_class=10, size=32), seed=0)


def test_assessment_scores_a_real_backbone_without_reading_the_test_split(colours):
    results = assess_backbones(colours, [LITE0])
    (result,) = results
    assert result.backbone == LITE0 and result.feature_dim == 1280
    assert result.features.views.shape[1] == len(colours.split("train")) + len(colours.split("val"))
    assert result.probe_accuracy > 0.9 and result.fit == "strong"     # solid colours: ImageNet features suffice
    assert np.isfinite(result.logme) and result.ms_per_image > 0
    assert summary(results).startswith("EfficientNet-Lite0 (4.7M params, 224 px) fits these images best")
    with pytest.raises(ValueError, match="unknown"):
        assess_backbones(colours, ["no_such_net"])


class Leaderboard(Callback):
    def __init__(self):
        self.rows, self.fits = [], 0

    def on_candidate(self, entry):
        self.rows.append(entry)

    def on_fit_start(self, info):
        self.fits += 1


def test_search_within_budget_writes_a_reproducible_winner(colours, tmp_path):
    seen = Leaderboard()
    base = TrainConfig(epochs=3, image_size=64)
    began = time.monotonic()
    result = RecipeSearch(colours, tmp_path / "run", budget_s=60, base=base, callbacks=[seen],
                          backbones=[LITE0]).run()
    took = time.monotonic() - began
    assert result.status == "completed"
    assert took < 60 + 30                     # the budget, plus a final fit and the test evaluation
    run = tmp_path / "run"
    board = json.loads((run / "leaderboard.json").read_text())
    latest = {row["name"]: row for row in seen.rows}         # a row seen again replaces the earlier one
    assert list(latest.values()) == board and board[0]["name"] == "default recipe"
    assert sum(row["chosen"] for row in board) == 1
    assert any(row["name"].startswith("head trial") and row["scored_by"].endswith("-fold CV") for row in board)
    # the last blocks are tried even where the frozen features fit strongly (they beat heads on both real sets)
    assert any(row["kind"] == "last-blocks" and row["status"] in ("done", "pruned") for row in board)
    # the trained candidates were offered to ensemble selection (kept only when more accurate together)
    (ensemble,) = [row for row in board if row["kind"] == "ensemble"]
    assert ensemble["status"] == "skipped" and "more accurate on validation" in ensemble["note"] or \
        ensemble["status"] == "done" and len(ensemble["recipe"]["members"]) >= 2
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_accuracy"] is not None and metrics["evaluated_on"] == "test"
    # every candidate trained without the test split; only the winner's run was evaluated on it, after
    evaluated = [folder / "metrics.json" for folder in (run / "candidates").iterdir()
                 if (folder / "metrics.json").exists()]        # a pruned candidate is never evaluated
    assert evaluated and all(json.loads(path.read_text())["test_accuracy"] is None for path in evaluated)
    # the winner exports to a verified ONNX file (whatever the search chose is inside the graph)
    from engine.outputs.export import export_run
    exported = export_run(run, tmp_path / "auto.onnx", exporter="legacy")
    assert exported.top1_agreement == 1.0 and exported.max_abs_diff < 1e-3
    # the winner's config.json alone reproduces the winner (same seed, no search)
    config = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    again = Trainer(colours, config, tmp_path / "again").fit()
    assert again.metrics["val_accuracy"] == pytest.approx(metrics["val_accuracy"])
    assert again.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])


class CancelAfterFirstModel(Callback):
    def __init__(self, control):
        self.control = control

    def on_candidate(self, entry):
        self.control.cancel()


def test_cancel_keeps_the_best_model_so_far(colours, tmp_path):
    control = RunControl()
    result = RecipeSearch(colours, tmp_path / "run", budget_s=600, base=TrainConfig(epochs=2, image_size=64),
                          callbacks=[CancelAfterFirstModel(control)], control=control, backbones=[LITE0]).run()
    assert result.status == "cancelled" and result.winner == "default recipe"
    assert (tmp_path / "run" / "model.safetensors").exists()
    assert json.loads((tmp_path / "run" / "leaderboard.json").read_text())[0]["chosen"]


# -- the command line -------------------------------------------------------------------------------
def test_cli_assess_and_auto(tmp_path):
    from tests.test_cli import run_cli
    data = write_colour_dataset(tmp_path / "colours", per_class=10, size=32)
    done = run_cli("assess", data, "--models", LITE0)
    assert done.returncode == 0, done.stderr
    assert LITE0 in done.stdout and "fits these images best" in done.stdout
    done = run_cli("train", data, "--out", tmp_path / "run", "--auto", "--budget", "30s", "--image-size", "64",
                   "--epochs", "3")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["status"] == "completed" and summary["test_accuracy"] is not None
    assert "[search] default recipe" in done.stderr
    again = run_cli("train", data, "--out", tmp_path / "again", "--config", tmp_path / "run" / "config.json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.strip().splitlines()[-1])["val_accuracy"] == pytest.approx(summary["val_accuracy"])


def test_cli_budget_needs_auto(tmp_path):
    from tests.test_cli import run_cli
    done = run_cli("train", tmp_path, "--out", tmp_path / "run", "--budget", "5m")
    assert done.returncode == 2 and "--auto" in done.stderr
