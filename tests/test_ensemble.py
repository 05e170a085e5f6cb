"""Ensembles: forward selection, the combined checkpoint, its metrics, export and reproduction from config."""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from engine.data.scan import scan_dataset
from engine.models.checkpoint import load_checkpoint
from engine.models.ensemble import ProbabilityAverage
from engine.outputs.export import ExportError, export_run, export_weights
from engine.outputs.gradcam import grad_cam
from engine.outputs.predict import load_classifier, preprocess_image
from engine.search.ensemble import combine_runs
from engine.training.config import TrainConfig
from engine.training.evaluation import evaluate_test_split, split_probabilities, stored_probabilities
from engine.training.metrics import classification_metrics
from engine.training.trainer import Trainer
from tests.conftest import write_colour_dataset


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two head-only runs on the same real images and split, with different seeds (and heads)."""
    root = tmp_path_factory.mktemp("ensemble")
    report = scan_dataset(write_colour_dataset(root / "colours", per_class=10, size=32), seed=0)
    runs = []
    for seed, head, tta in ((0, "linear", "none"), (1, "mlp", "flip")):
        config = TrainConfig(epochs=2, image_size=64, seed=seed, head=head, tta=tta, augmentation="none")
        Trainer(report, config, root / f"member{seed}", evaluate_test=False).fit()
        runs.append(root / f"member{seed}")
    return report, runs, root


def test_combined_runs_predict_the_mean_probability_and_export_verified(two_runs, tmp_path):
    report, runs, root = two_runs
    val = report.split("val")
    members = [split_probabilities(run, val) for run in runs]
    for run, (computed, labels) in zip(runs, members):     # each fit kept what its checkpoint computes
        kept, kept_labels = stored_probabilities(run, val, "val")
        assert np.allclose(kept, computed, atol=1e-5) and (kept_labels == labels).all()
    metrics = combine_runs(report, runs, tmp_path / "ensemble")
    model, checkpoint = load_checkpoint(tmp_path / "ensemble" / "model.safetensors")
    assert isinstance(model, ProbabilityAverage) and len(model.members) == 2
    assert model.shared == 9             # two heads on one frozen backbone: every stage runs once per view
    assert [m["head"] for m in checkpoint.meta["ensemble"]] == ["linear", "mlp"]
    assert [m["tta"] for m in checkpoint.meta["ensemble"]] == ["none", "flip"]
    mean = (members[0][0] + members[1][0]) / 2
    ensemble, labels = split_probabilities(tmp_path / "ensemble", val)
    assert np.allclose(ensemble, mean, atol=1e-5)          # the saved checkpoint computes the mean itself
    assert metrics["val_accuracy"] == pytest.approx(float(np.mean(mean.argmax(1) == labels)))
    # the same metrics whether the caller passes the members' probabilities or the checkpoint is scored
    quick = combine_runs(report, runs, tmp_path / "quick", val_probabilities=[p for p, _ in members])
    assert quick["val_accuracy"] == metrics["val_accuracy"]
    assert json.loads((tmp_path / "ensemble" / "config.json").read_text())["ensemble"][1]["seed"] == 1
    tested = evaluate_test_split(tmp_path / "ensemble", report)
    assert tested["test_accuracy"] is not None and tested["evaluated_on"] == "test"

    # one ONNX graph holds both members (and the second one's flip), verified like any export
    exported = export_run(tmp_path / "ensemble", tmp_path / "ensemble.onnx", exporter="legacy")
    assert exported.top1_agreement == 1.0 and exported.max_abs_diff < 1e-3
    card = json.loads((tmp_path / "ensemble.json").read_text())
    assert len(card["ensemble"]) == 2 and "mean probability of 2 models" in card["output"]["meaning"]
    onnx = load_classifier(tmp_path / "ensemble.onnx")
    from PIL import Image
    image = Image.open(val[0].path).convert("RGB")
    session = ort.InferenceSession(str(tmp_path / "ensemble.onnx"))
    logits = session.run(None, {session.get_inputs()[0].name: preprocess_image(image, onnx.preprocessing)[None]})[0]
    assert np.allclose(torch.softmax(torch.from_numpy(logits), 1).numpy()[0], ensemble[0], atol=1e-4)

    with pytest.raises(ExportError, match="ensemble"):
        export_weights(tmp_path / "ensemble", tmp_path / "weights.safetensors")
    heat, index, probability = grad_cam(model, image, checkpoint.preprocessing)
    assert heat.shape == (64, 64) and 0 <= heat.min() and heat.max() <= 1
    assert index == int(ensemble[0].argmax()) and probability == pytest.approx(float(ensemble[0].max()), abs=1e-4)


def test_an_ensemble_config_trains_the_same_ensemble_again(two_runs, tmp_path):
    from tests.test_cli import run_cli
    report, runs, root = two_runs
    combine_runs(report, runs, tmp_path / "ensemble")
    first = evaluate_test_split(tmp_path / "ensemble", report)
    done = run_cli("train", root / "colours", "--out", tmp_path / "again", "--config",
                   tmp_path / "ensemble" / "config.json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["members"] == 2
    assert summary["val_accuracy"] == pytest.approx(first["val_accuracy"])
    assert summary["test_accuracy"] == pytest.approx(first["test_accuracy"])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"ensemble": [{"epochs": 2}]}))
    refused = run_cli("train", root / "colours", "--out", tmp_path / "bad", "--config", bad)
    assert refused.returncode == 2 and "at least two member configs" in refused.stderr


def test_search_averages_finalists_chosen_before_validation_is_read(demo_dataset, tmp_path):
    """The search's ensemble on real photos: the last blocks' runs first, then the heads by their screening
    score (not the incumbent, the first), at most three, whatever validation says; written as one run, judged
    as one more finalist, and when it wins, tested once."""
    from engine.search.auto import RecipeSearch
    report = scan_dataset(demo_dataset, seed=0)
    search = RecipeSearch(report, tmp_path / "run", budget_s=600, backbones=["efficientnet_lite0"])
    configs = [TrainConfig(epochs=epochs, image_size=64, seed=seed, head=head, augmentation="none", lr=lr,
                           checkpoint="last")
               for seed, head, lr, epochs in ((0, "linear", 3e-3, 2), (3, "mlp", 3e-3, 4), (2, "linear", 3e-2, 2),
                                              (1, "linear", 1e-2, 3))]
    for index, (config, screening) in enumerate(zip(configs, (0.5, 0.7, 0.6, 0.4))):
        search._fit_candidate(f"head {index}", "head", config, screening=screening)
    search._searched = ["efficientnet_lite0"]
    assert [c.name for c in search._ensemble_members()] == ["head 1", "head 2", "head 3"]
    search._ensemble()
    row = search.candidates[-1]
    assert row.kind == "ensemble" and row.status == "done" and row.recipe["members"] == ["head 1", "head 2", "head 3"]
    val = report.split("val")
    members = [stored_probabilities(c.run_dir, val, "val")[0] for c in search.candidates[1:4]]
    labels = np.array([s.label for s in val])
    assert row.score == pytest.approx(float((np.mean(members, axis=0).argmax(1) == labels).mean()))
    assert row.scored_by.startswith(f"validation split ({len(val)} images") and row.interval[0] <= row.score
    result = search._finish("completed")
    ensemble = next(c for c in result.leaderboard if c["name"] == "ensemble")
    assert ensemble["comparison"]["wins"] + ensemble["comparison"]["losses"] <= len(val)
    if result.winner == "ensemble":
        metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
        assert metrics["val_accuracy"] == row.val_accuracy and metrics["test_accuracy"] is not None
        assert "ensemble" in json.loads((tmp_path / "run" / "config.json").read_text())



def test_seeds_of_one_recipe_are_compared_once_through_their_ensemble(tmp_path):
    """Two seeds of the last blocks are one recipe: when both join the ensemble they become its members and
    only the ensemble is compared with the default, so two draws do not take two chances to win."""
    from engine.search.auto import RecipeSearch
    from tests.conftest import write_colour_dataset
    report = scan_dataset(write_colour_dataset(tmp_path / "colours", per_class=10, size=32), seed=0)
    search = RecipeSearch(report, tmp_path / "run", budget_s=600, backbones=["efficientnet_lite0"])
    search._default_fit()
    for seed in (1, 2):       # stand-ins for the blocks' seeds: trained as cheap heads, labelled as the blocks
        search._fit_candidate(f"blocks (seed {seed})", "last-blocks",
                              TrainConfig(epochs=2, image_size=64, seed=seed, augmentation="none", checkpoint="last"))
    search._searched = ["efficientnet_lite0"]
    search._ensemble()
    seeds = [c for c in search.candidates if c.kind == "last-blocks"]
    assert [c.stage for c in seeds] == ["member", "member"] and all(c.score is not None for c in seeds)
    result = search._finish("completed")
    compared = [row["name"] for row in result.leaderboard if row["comparison"]]
    assert compared == ["ensemble"]
    assert "correcting for 1 candidate)" in result.decision

def test_members_run_their_shared_frozen_stages_once_with_the_same_result():
    """A head-only and a last-blocks member of one backbone share the frozen stages: the ensemble runs them
    once per view, and its output equals running each member whole (with its own flip)."""
    from engine.models.catalog import create_model
    from engine.models.ensemble import ensemble_module
    from engine.models.layers import feature_stages
    from engine.models.predictor import MirrorAveraged
    head_only = create_model("efficientnet_lite0", 3, input_size=96).model.eval()
    blocks = create_model("efficientnet_lite0", 3, input_size=96).model.eval()
    torch.manual_seed(0)
    with torch.no_grad():              # what fine-tuning the last 2 blocks and the head changes
        for module in (blocks.blocks[-2], blocks.blocks[-1], blocks.conv_head, blocks.classifier):
            for parameter in module.parameters():
                parameter.add_(0.01 * torch.randn_like(parameter))
        head_only.classifier.weight.copy_(blocks.classifier.weight + 0.05)
    ensemble = ensemble_module([blocks, head_only], [{"tta": "flip"}, {"tta": "none"}]).eval()
    stages = len(feature_stages(blocks))
    assert ensemble.shared == stages - 3          # everything before the two trained blocks
    x = torch.randn(4, 3, 96, 96)
    with torch.inference_mode():
        whole = torch.stack([MirrorAveraged(blocks)(x).softmax(-1), head_only(x).softmax(-1)]).mean(0).log()
        assert torch.allclose(ensemble(x), whole, atol=1e-5)
    same = ensemble_module([head_only, head_only], [{"tta": "none"}, {"tta": "none"}])
    assert same.shared == stages                   # two heads on one frozen backbone: only the heads differ


def test_predictions_keep_class_probabilities_only_within_a_json_friendly_size(monkeypatch):
    import engine.training.metrics as metrics
    logits, labels = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), torch.tensor([0, 2])
    rows = classification_metrics(logits, labels, ["a", "b", "c"], ["x.png", "y.png"])["predictions"]
    assert np.allclose(rows[0]["probabilities"], torch.softmax(logits[0], 0).numpy(), atol=1e-6)
    monkeypatch.setattr(metrics, "KEPT_PROBABILITIES", 5)          # 2 images x 3 classes is over it
    rows = classification_metrics(logits, labels, ["a", "b", "c"], ["x.png", "y.png"])["predictions"]
    assert "probabilities" not in rows[0] and rows[1]["predicted"] == 1


def test_a_single_run_config_reader_refuses_an_ensemble_config(tmp_path):
    """`torchrun ... train --config` reads one TrainConfig: an ensemble's config is refused, not read as
    the defaults (TrainConfig.from_dict ignores unknown keys)."""
    from engine.cli.common import BadInput, config_from_file
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"ensemble": [TrainConfig().to_dict(), TrainConfig(seed=1).to_dict()]}))
    with pytest.raises(BadInput, match="ensemble's config"):
        config_from_file(str(path))
