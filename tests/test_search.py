"""Backbone assessment and the recipe search: LogME against the closed-form evidence, grouped cross-validation,
the fitted head, honest selection (an incumbent kept against chance, replaced by a truly better model), the
search's budget, cancel, winner and reproducibility, on real models and images."""
import json
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from engine.core.callbacks import Callback
from engine.core.control import RunControl
from engine.data.scan import scan_dataset
from engine.search.assess import assess_backbones, assessment_sample, summary
from engine.core.significance import (binomial_upper_tail, decide, detectable_difference, holm,
                                      paired_difference_interval, wilson_interval)
from engine.search.auto import RecipeSearch, noise_margin, parse_budget
from engine.search.crossval import FeatureViews, head_recipe_accuracy
from engine.search.logme import logme_score, maximize_evidence
from engine.training.config import TrainConfig
from engine.training.folds import near_duplicate_groups, stratified_folds, usable_folds
from engine.training.logistic import fit_head, solve
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


def test_head_recipes_are_scored_on_held_out_folds():
    data = separable_views()
    folds = stratified_folds(data.labels, 5)
    from engine.models.heads import make_head
    good = TrainConfig(lr=1e-2, epochs=15, batch_size=16)
    starved = TrainConfig(lr=1e-6, epochs=1, batch_size=16)
    make = lambda: make_head("linear", 32, 3)      # noqa: E731
    good_scores = head_recipe_accuracy(data, good, folds, make, 0.0)
    starved_scores = head_recipe_accuracy(data, starved, folds, make, 0.0)
    assert len(good_scores.scores) == len(starved_scores.scores) == 5
    assert good_scores.count == 120 and good_scores.mean == good_scores.correct / 120
    assert good_scores.mean > starved_scores.mean + 0.3     # CV tells a working recipe from a broken one


def session_features(items=60, shots=4, singles=0, d=64, seed=0):
    """Photos of `items` objects, each shot `shots` times (the same vector plus a little noise), whose labels
    are random: nothing about an object tells its class, so a model can only score above chance on a shot
    whose twin it trained on. `singles` more objects shot once."""
    rng = np.random.default_rng(seed)
    objects = rng.normal(size=(items + singles, d))
    labels_of = rng.integers(0, 2, items + singles)
    rows = [i for i in range(items) for _ in range(shots)] + list(range(items, items + singles))
    features = objects[rows] + 0.05 * rng.normal(size=(len(rows), d))
    return torch.tensor(features, dtype=torch.float32), labels_of[rows], np.array(rows)


def test_near_identical_samples_form_one_group_and_stay_in_one_fold():
    features, labels, objects = session_features(items=40, shots=4, singles=30)
    groups = near_duplicate_groups(features)
    for obj in np.unique(objects):                      # each object's shots, and nothing else, form a group
        members = groups[objects == obj]
        assert len(set(members)) == 1 and (groups == members[0]).sum() == (objects == obj).sum()
    folds = stratified_folds(labels, 5, seed=1, groups=groups)
    assert all(len(set(folds[groups == g])) == 1 for g in np.unique(groups))
    assert np.bincount(folds).max() - np.bincount(folds).min() <= 4        # folds stay about equal in size
    plain = torch.randn(200, 64, generator=torch.Generator().manual_seed(0))
    assert len(np.unique(near_duplicate_groups(plain))) == 200   # independent samples: no groups


def test_cross_validation_is_honest_only_when_twins_stay_in_one_fold():
    """The failure the issue saw (99 % inside train, 91 % on new sessions), in miniature: labels carry no
    signal, yet folds that split an object's shots score far above chance; grouped folds do not."""
    features, labels, _ = session_features(items=60, shots=4)
    ungrouped = stratified_folds(labels, 5, seed=0)
    x = (features - features.mean(0)) / features.std(0)
    right = 0
    for fold in range(5):
        weight, bias = solve(x[ungrouped != fold], labels[ungrouped != fold], 2, 1e-3)
        right += int(((x[ungrouped == fold] @ weight.T + bias).argmax(1).numpy() == labels[ungrouped == fold]).sum())
    assert right / len(labels) > 0.9                       # memorised twins look like skill
    fitted = fit_head(features[None], labels, 2)           # grouped cross-validation inside fit_head
    assert fitted.groups == 60 and fitted.cv_accuracy < 0.7


def test_stratified_folds_count_groups_of_the_rarest_class():
    labels = np.array([0] * 12 + [1] * 6)
    groups = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 6, 7, 7, 7])
    assert usable_folds(labels) == 5 and usable_folds(labels, groups=groups) == 2


def test_the_fitted_head_solves_logistic_regression_exactly():
    """Against scikit-learn's LogisticRegression (lbfgs) on the same problem: penalty/2 |W|^2 + mean
    cross-entropy is its objective with C = 1 / (penalty * N)."""
    sklearn = pytest.importorskip("sklearn.linear_model")
    data = separable_views(n=150, d=12, classes=3, seed=2)
    x, y = data.views[0], data.labels
    penalty = 0.05
    weight, bias = solve(x, y, 3, penalty)
    reference = sklearn.LogisticRegression(C=1 / (penalty * len(y)), tol=1e-10, max_iter=5000).fit(x.numpy(), y)
    ours = torch.softmax(x @ weight.T + bias, 1).numpy()
    np.testing.assert_allclose(ours, reference.predict_proba(x.numpy()), atol=2e-3)
    fitted = fit_head(data.views, y, 3)
    logits = x @ fitted.weight.T + fitted.bias           # on raw features: the standardisation is folded in
    assert (logits.argmax(1).numpy() == y).mean() > 0.9 and fitted.penalty in fitted.cv_by_penalty
    best = max(fitted.cv_by_penalty.values())
    assert fitted.cv_accuracy >= best - np.sqrt(best * (1 - best) / len(y))      # the one-standard-error rule
    assert all(p <= fitted.penalty for p, a in fitted.cv_by_penalty.items() if a == best)


# -- honest selection ------------------------------------------------------------------------------------
def test_intervals_and_the_exact_paired_test():
    low, high = wilson_interval(52, 57)
    assert low == pytest.approx(0.8113, abs=1e-3) and high == pytest.approx(0.9619, abs=1e-3)
    assert binomial_upper_tail(8, 10) == pytest.approx(56 / 1024)           # P(X >= 8), X ~ Bin(10, 1/2)
    assert binomial_upper_tail(0, 10) == 1.0 and binomial_upper_tail(11, 10) == 0.0
    assert binomial_upper_tail(560, 1000) == pytest.approx(0.0000825, rel=0.15)   # the normal branch
    low, high = paired_difference_interval(10, 4, 100)
    assert low < 0.06 < high
    assert holm([0.01, 0.04, 0.03]) == [True, False, False]
    assert holm([0.01, 0.02, 0.03]) == [True, True, True]
    assert detectable_difference(57) == pytest.approx(7 / 57)     # 9 disagreements: 8 wins, 1 loss
    assert detectable_difference(393) < 0.05 < detectable_difference(90)


def test_a_candidate_ahead_by_chance_on_a_small_split_does_not_replace_the_incumbent():
    """Six candidates as good as the incumbent (each right on 90 % of 57 images, independently): the best
    of them is ahead by luck, as the issue's 55-against-52 photos; the incumbent stays."""
    rng = np.random.default_rng(4)
    incumbent = rng.random(57) < 0.9
    candidates = {f"seed {i}": rng.random(57) < 0.9 for i in range(6)}
    luckiest = max(candidates, key=lambda name: candidates[name].sum())
    assert candidates[luckiest].sum() >= incumbent.sum() + 2            # the case: one looks better
    decision = decide("default recipe", incumbent, candidates)
    assert decision.winner is None and "kept default recipe" in decision.reason
    alone = decide("default recipe", incumbent, {luckiest: candidates[luckiest]})
    assert alone.winner is None                                         # not even without correction


def test_a_truly_better_candidate_replaces_the_incumbent_despite_many_tries():
    rng = np.random.default_rng(5)
    incumbent = rng.random(393) < 0.75
    better = incumbent | (rng.random(393) < 0.35)        # right wherever the incumbent is, and more
    better[:5] = False                                    # and a few losses, as real models have
    candidates = {f"seed {i}": rng.random(393) < 0.75 for i in range(5)} | {"last 2 blocks": better}
    decision = decide("default recipe", incumbent, candidates)
    assert decision.winner == "last 2 blocks" and "replaced default recipe" in decision.reason
    winner = next(c for c in decision.comparisons if c.name == "last 2 blocks")
    assert winner.significant and winner.difference_interval[0] > 0
    assert not any(c.significant for c in decision.comparisons if c.name != "last 2 blocks")


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
    assert result.features.held_out.sum() == len(colours.split("val"))
    assert result.probe_accuracy > 0.9 and result.fit == "strong"     # solid colours: ImageNet features suffice
    assert "validation images" in result.probe_protocol       # judged as the search judges, not inside train
    low, high = result.probe_interval
    assert low < result.probe_accuracy <= high and high - low > 0.1   # 6 validation images: a wide interval
    assert not result.shifted and result.cv_accuracy > 0.9
    assert np.isfinite(result.logme) and result.ms_per_image > 0
    assert summary(results).startswith("EfficientNet-Lite0 (4.7M params, 224 px) fits these images best")
    assert "on the validation images (95 % interval" in summary(results)
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
    assert took < 60 + 10                     # the budget is kept, the final test evaluation included
    run = tmp_path / "run"
    board = json.loads((run / "leaderboard.json").read_text())
    latest = {row["name"]: row for row in seen.rows}         # a row seen again replaces the earlier one
    assert list(latest.values()) == board and board[0]["name"] == "default recipe"
    assert sum(row["chosen"] for row in board) == 1
    # head trials are screening inside the training split, never compared with the finalists
    trials = [row for row in board if row["name"].startswith("head trial")]
    assert trials and all(row["stage"] == "screening" and "inside the training split" in row["scored_by"]
                          for row in trials)
    # one protocol for every finalist: the same validation images, with an interval
    finalists = [row for row in board if row["stage"] == "final" and row["score"] is not None]
    val = len(colours.split("val"))
    assert finalists[0]["name"] == "default recipe"
    # the fitted head is always trained; compared only when it screened better than the default beyond noise
    fitted = next(row for row in board if row["name"] == "fitted head")
    assert fitted["recipe"]["optimizer"] == "lbfgs" and fitted["screening"] is not None
    assert fitted["stage"] == "final" and fitted["comparison"] or \
        fitted["stage"] == "screening" and "not compared on validation" in fitted["note"]
    assert all(row["scored_by"].startswith(f"validation split ({val} images") and row["interval"][0] <=
               row["score"] <= row["interval"][1] and row["score"] == row["val_accuracy"] for row in finalists)
    # every finalist keeps its last epoch, the incumbent too (as a manual run does by default)
    assert all("not used to train or pick it" in row["scored_by"] for row in finalists)
    assert all(row["comparison"]["wins"] + row["comparison"]["losses"] <= val for row in finalists
               if row["name"] != "default recipe")
    # the last blocks are tried even where the frozen features fit strongly (they beat heads on both real sets)
    assert any(row["kind"] == "last-blocks" and row["status"] in ("done", "pruned") for row in board)
    # finalists of one backbone (not the incumbent) are averaged by a rule fixed before validation is read,
    # and judged as one more; here the heads screened no better than the default, which leaves the blocks
    members = [row["name"] for row in finalists if row["kind"] != "ensemble"][1:]
    ensembles = [row for row in board if row["kind"] == "ensemble"]
    assert len(members) < 2 and not ensembles or ensembles[0]["status"] == "done" and \
        2 <= len(ensembles[0]["recipe"]["members"]) <= 3 and "default recipe" not in ensembles[0]["recipe"]["members"]
    report = json.loads((run / "search.json").read_text())
    assert report["decision"] and any("validation split has" in w for w in report["warnings"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_accuracy"] is not None and metrics["evaluated_on"] == "test"
    if "ensemble" not in metrics:       # a single winner is calibrated and scores the test split it never saw
        assert metrics["calibration"]["test_ece_after"] is not None and metrics["unknown"]["test_accepted"] > 0.5
        assert metrics["calibration"]["reliability"]["split"] == "test"
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


def test_search_keeps_the_default_recipe_against_candidates_ahead_by_chance(demo_dataset, tmp_path):
    """On the demo photos' 45 validation images: four more seeds of the default recipe. The luckiest is
    ahead of the default recipe on validation, as the issue's 'last 2 blocks (seed 1)' was; it is kept out."""
    report = scan_dataset(demo_dataset, seed=0)
    base = TrainConfig(epochs=4, image_size=64, checkpoint="last")     # every run the same way: only chance differs
    search = RecipeSearch(report, tmp_path / "run", budget_s=600, base=base, backbones=[LITE0])
    search._default_fit()
    for seed in range(1, 5):
        search._fit_candidate(f"default recipe (seed {seed})", "head", replace(search.base, seed=seed, lr=1e-2))
    default, *seeds = search.candidates
    assert max(c.score for c in seeds) > default.score          # the case: one looks better by chance
    result = search._finish("completed")
    assert result.winner == "default recipe" and "kept default recipe" in result.decision
    assert not any(c.comparison["significant"] for c in seeds)


def test_a_head_that_screened_no_better_than_the_default_is_not_compared(colours, tmp_path):
    """Only heads that screened better than the default beyond one standard error are judged on validation:
    each comparison takes a share of the chance Holm's correction leaves the others."""
    search = RecipeSearch(colours, tmp_path / "run", budget_s=600, base=TrainConfig(epochs=2, image_size=64),
                          backbones=[LITE0])
    search._default_fit()
    search._folds, search._groups = np.arange(100) % 5, 100     # screening over 100 training images
    default = search.candidates[0]
    default.screening = 0.80                              # one standard error: 4 points
    alike = search._fit_candidate("alike", "head", replace(search.base, seed=1), screening=0.83)
    ahead = search._fit_candidate("ahead", "head", replace(search.base, seed=2), screening=0.85)
    for candidate in (alike, ahead):
        search._compare_only_if_promising(candidate)
    assert alike.stage == "screening" and alike.score == 0.83 and "not compared on validation" in alike.note
    assert alike.scored_by.startswith("5-fold CV inside the training split")
    assert ahead.stage == "final" and ahead.score == ahead.val_accuracy
    result = search._finish("completed")
    compared = [row["name"] for row in result.leaderboard if row["comparison"]]
    assert compared == ["ahead"]
    # when screening is known not to carry over (validation clearly below it), it cannot decide: all compared
    default.screening, default.score = 0.95, 0.30
    assert search._screening_misleads()
    unscreened = search._fit_candidate("alike, other conditions", "head", replace(search.base, seed=3),
                                       screening=0.95)
    search._compare_only_if_promising(unscreened)
    assert unscreened.stage == "final"


def test_search_replaces_a_worse_default_with_a_truly_better_candidate(demo_dataset, tmp_path):
    report = scan_dataset(demo_dataset, seed=0)
    crippled = TrainConfig(epochs=1, lr=1e-5, image_size=64, checkpoint="best")   # the incumbent barely trains
    search = RecipeSearch(report, tmp_path / "run", budget_s=600, base=crippled, backbones=[LITE0])
    search._default_fit()
    search._fit_candidate("working head", "head", replace(search.base, epochs=8, lr=3e-3))
    default, better = search.candidates
    # the user's incumbent keeps the epoch best on validation, which only favours it, and says so;
    # a candidate keeps its last epoch
    assert "its epoch picked there" in default.scored_by
    assert "not used to train or pick it" in better.scored_by
    result = search._finish("completed")
    assert result.winner == "working head" and "replaced default recipe" in result.decision
    assert better.comparison["significant"] and better.comparison["difference_interval"][0] > 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["val_accuracy"] == better.score and metrics["test_accuracy"] is not None


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
