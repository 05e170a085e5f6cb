"""Texts end to end on real texts and the real all-MiniLM-L6-v2 encoder: scan → train (head-only on cached
sentence vectors, last layers on tokens) → checkpoint → verified ONNX export → torch-free predict, and
the command line around it."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.core.callbacks import Callback
from engine.core.control import RunControl
from engine.models.checkpoint import load_checkpoint
from engine.models.layers import LayerTree, block_groups
from engine.modalities.text.model import create_text_model
from engine.modalities.text.export import export_text_run
from engine.modalities.text.predict import OnnxTextClassifier, TorchTextClassifier, is_text_model, predict_texts
from engine.training.config import TrainConfig
from engine.training.datasets import scan_any
from engine.training.inputs import inputs_for
from engine.modalities.text.inputs import TextInputs
from engine.modalities.text.tokens import checkpoint_tokenizer
from engine.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
FORTUNES = Path("/usr/share/games/fortunes")
CATEGORIES = ("computers", "food", "science")

pytestmark = pytest.mark.skipif(not (FORTUNES / "computers").is_file(),
                                reason="Debian's fortunes package is not installed")


def fortunes(category: str, count: int) -> list[str]:
    """The first `count` short fortunes of a category file (fortunes are separated by lines of '%')."""
    text = (FORTUNES / category).read_text(encoding="utf-8", errors="replace")
    items = [" ".join(t.split()) for t in text.split("\n%\n")]
    return [t for t in items if 20 < len(t) < 300][:count]


def write_fortunes_csv(path: Path, per_class: int = 30) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for category in CATEGORIES:
            writer.writerows((text, category) for text in fortunes(category, per_class))
    return path


@pytest.fixture(scope="module")
def texts_csv(tmp_path_factory) -> Path:
    return write_fortunes_csv(tmp_path_factory.mktemp("texts") / "fortunes.csv")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cache")
    old = os.environ.get("TRANSFERLAB_CACHE_DIR")
    os.environ["TRANSFERLAB_CACHE_DIR"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("TRANSFERLAB_CACHE_DIR", None)
    else:
        os.environ["TRANSFERLAB_CACHE_DIR"] = old


@pytest.fixture(autouse=True)
def shared_cache(cache, monkeypatch):
    """One cache folder for the module (conftest gives each test its own): fits share sentence vectors."""
    monkeypatch.setenv("TRANSFERLAB_CACHE_DIR", str(cache))


@pytest.fixture(scope="module")
def report(texts_csv):
    return scan_any(texts_csv, seed=0)


@pytest.fixture(scope="module")
def head_run(report, cache, tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "head"
    config = TrainConfig(backbone="all-minilm-l6-v2", epochs=15, lr=1e-2)
    result = Trainer(report, config, run).fit()
    return run, result


def test_a_text_csv_is_scanned_as_texts_with_the_encoders_token_count(report):
    assert report.modality == "text" and report.classes == sorted(CATEGORIES)
    assert len(report.samples) == 90 and all(s.text for s in report.samples)
    assert isinstance(inputs_for(report), TextInputs)


def test_the_text_model_has_the_image_models_layer_tree_and_presets():
    bundle = create_text_model("all-minilm-l6-v2", 3)
    groups = block_groups(bundle.model)
    assert len(groups) == 8                                 # embeddings, 6 layers, head
    assert groups[-1] == ["classifier.weight", "classifier.bias"]
    tree = LayerTree(bundle.model)
    tree.apply_preset("last-n", 1)
    trainable = {n for n, p in bundle.model.named_parameters() if p.requires_grad}
    assert trainable == set(groups[-1]) | set(groups[-2])
    assert all(name.startswith("encoder.encoder.layer.5.") for name in groups[-2])
    assert bundle.tokenizer.encode(["a short text", "and a somewhat longer one here"]).shape[:2] == (2, 2)


def test_head_only_trains_on_cached_sentence_vectors_and_learns(head_run, report):
    run, result = head_run
    assert result.status == "completed"
    config = json.loads((run / "config.json").read_text())
    assert config["frozen_pass"] == "pytorch" and config["backbone"] == "all-minilm-l6-v2"
    # three categories of 30 fortunes: far above chance (1/3) on the held-out texts
    assert result.metrics["val_accuracy"] > 0.6
    wrong = result.metrics["most_confident_wrong"]
    assert all(item["text"] for item in wrong)
    predictions = json.loads((run / "predictions.json").read_text())
    texts = {s.path: s.text for s in report.samples}
    assert all(row["text"] == texts[row["path"]] for row in predictions["val"])


def test_a_second_fit_reads_the_sentence_vectors_back(head_run, report, tmp_path):
    config = TrainConfig(backbone="all-minilm-l6-v2", epochs=2)
    Trainer(report, config, tmp_path / "again").fit()
    assert json.loads((tmp_path / "again" / "config.json").read_text())["frozen_pass"] == "reused"


def test_the_checkpoint_rebuilds_the_model_without_the_encoder_folder(head_run, report):
    run, _ = head_run
    model, checkpoint = load_checkpoint(run / "model.safetensors")
    assert checkpoint.modality == "text" and checkpoint.classes == report.classes
    tokens = torch.from_numpy(checkpoint_tokenizer(checkpoint.meta).encode([report.samples[0].text]))
    torch_logits = TorchTextClassifier(run / "model.safetensors").logits([report.samples[0].text])
    with torch.inference_mode():       # the classifier's logits are calibrated: divided by the run's temperature
        assert np.allclose(model(tokens).numpy() / checkpoint.meta["trust"]["temperature"], torch_logits, atol=1e-6)


def test_export_is_verified_on_validation_texts_and_predicts_without_torch(head_run, tmp_path):
    run, _ = head_run
    onnx_path = tmp_path / "texts.onnx"
    result = export_text_run(run, onnx_path)
    assert result.top1_agreement == 1.0 and result.max_abs_diff < 1e-3 and result.n_samples >= 9
    assert (tmp_path / "texts.json").is_file() and (tmp_path / "texts.tokenizer.json").is_file()
    assert is_text_model(onnx_path) and is_text_model(run)
    sample = ["The compiler crashed with a segmentation fault.", "Add two cups of flour and bake."]
    torch_probs = TorchTextClassifier(run / "model.safetensors").logits(sample)
    assert np.allclose(OnnxTextClassifier(onnx_path).logits(sample), torch_probs, atol=1e-3)
    code = ("import sys; from engine.modalities.text.predict import OnnxTextClassifier, predict_texts; "
            f"c = OnnxTextClassifier({str(onnx_path)!r}); "
            "r = predict_texts(c, [('a', 'my kernel panicked')]); "
            "print(r.predictions[0].label); assert 'torch' not in sys.modules, 'torch was imported'")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() in CATEGORIES
    # the standalone example (onnxruntime + tokenizers only) gives the engine's probabilities
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "onnx_predict_text.py"), str(onnx_path),
                           *sample, "--top-k", "3"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    engine_rows = predict_texts(OnnxTextClassifier(onnx_path), list(enumerate(sample)), top_k=3).predictions
    assert [r["label"] for r in rows] == [p.label for p in engine_rows]
    assert np.allclose([r["score"] for r in rows], [p.score for p in engine_rows], atol=1e-5)


def test_text_runs_combine_into_an_ensemble_that_predicts_and_exports_like_one_run(head_run, report, tmp_path):
    """Two text runs (another seed, another head) as one checkpoint: the mean of their probabilities, scored
    like a run, predicted and exported through the single text model's functions."""
    from engine.search.ensemble import combine_runs
    from engine.training.evaluation import evaluate_test_split
    run, _ = head_run
    other = tmp_path / "mlp"
    Trainer(report, TrainConfig(backbone="all-minilm-l6-v2", epochs=3, lr=1e-2, head="mlp", seed=1), other,
            evaluate_test=False).fit()
    ensemble = tmp_path / "ensemble"
    metrics = combine_runs(report, [run, other], ensemble)
    assert metrics["val_accuracy"] is not None and [m["head"] for m in metrics["ensemble"]] == ["linear", "mlp"]
    metrics = evaluate_test_split(ensemble, report)
    assert metrics["test_accuracy"] is not None
    predictions = json.loads((ensemble / "predictions.json").read_text())
    texts = {s.path: s.text for s in report.samples}
    assert all(row["text"] == texts[row["path"]] for split in ("val", "test") for row in predictions[split])

    sample = ["The compiler crashed with a segmentation fault.", "Add two cups of flour and bake."]
    members = [TorchTextClassifier(folder / "model.safetensors").logits(sample) for folder in (run, other)]
    mean = np.mean([torch.from_numpy(m).softmax(-1).numpy() for m in members], axis=0)
    assert is_text_model(ensemble)
    combined = TorchTextClassifier(ensemble / "model.safetensors")
    assert np.allclose(torch.from_numpy(combined.logits(sample)).softmax(-1).numpy(), mean, atol=1e-5)
    top = predict_texts(combined, list(enumerate(sample)), top_k=1).predictions
    assert [p.label for p in top] == [report.classes[i] for i in mean.argmax(1)]

    result = export_text_run(ensemble, tmp_path / "ensemble.onnx")
    assert result.top1_agreement == 1.0 and result.max_abs_diff < 1e-3
    assert np.allclose(OnnxTextClassifier(tmp_path / "ensemble.onnx").logits(sample), combined.logits(sample),
                       atol=1e-3)


def test_predict_skips_empty_texts_and_ranks_every_class(head_run):
    run, _ = head_run
    classifier = TorchTextClassifier(run / "model.safetensors")
    report = predict_texts(classifier, [("a", "   "), ("b", "Physics and chemistry")], top_k=3)
    assert report.skipped == [{"path": "a", "reason": "empty text"}]
    assert [p.path for p in report.predictions] == ["b"]
    assert sorted(entry["label"] for entry in report.predictions[0].top_k) == sorted(CATEGORIES)


def test_the_last_layers_on_cached_hidden_states_compute_what_the_whole_model_computes():
    from engine.modalities.text.inputs import (SuffixOnTextActivations, TextActivations, activation_boundary,
                                              pack_activations)
    bundle = create_text_model("all-minilm-l6-v2", 3)
    model = bundle.model.eval()
    texts = ["short", "a considerably longer text, with many more tokens than the one before it", "mid-sized text"]
    LayerTree(model).apply_preset("last-n", 2)
    assert activation_boundary(model) == 4
    states = TextActivations(model, bundle.tokenizer, 4).activations(texts, RunControl(), lambda *_: None)
    assert [s.shape[0] for s in states] == [int(n) for n in bundle.tokenizer.encode(texts)[:, 1].sum(1)]
    packed, _ = pack_activations([(s, 0) for s in states])
    with torch.inference_mode():
        whole = model(torch.from_numpy(bundle.tokenizer.encode(texts)))
        suffix = SuffixOnTextActivations(model, 4)(packed)
    assert torch.allclose(whole, suffix, atol=1e-5)
    LayerTree(model).apply_preset("none")
    assert activation_boundary(model) is None


def test_the_last_layer_fine_tunes_on_cached_hidden_states_and_the_rest_stays(report, cache, tmp_path):
    config = TrainConfig(backbone="all-minilm-l6-v2", epochs=1, freeze="last-n", freeze_blocks=1, lr=1e-3,
                         max_tokens=32)
    before = create_text_model("all-minilm-l6-v2", 3).model.state_dict()
    result = Trainer(report, config, tmp_path / "deep").fit()
    assert result.status == "completed"
    assert json.loads((tmp_path / "deep" / "config.json").read_text())["frozen_pass"] == "pytorch"
    model, _ = load_checkpoint(tmp_path / "deep" / "model.safetensors")
    after = model.state_dict()
    name5 = "encoder.encoder.layer.5.output.dense.weight"
    name0 = "encoder.encoder.layer.0.output.dense.weight"
    assert not torch.equal(before[name5], after[name5])
    assert torch.equal(before[name0], after[name0])


class CancelAfterEpoch(Callback):
    def __init__(self, control: RunControl, epoch: int):
        self.control, self.epoch = control, epoch

    def on_epoch_end(self, epoch, logs):
        if epoch == self.epoch:
            self.control.cancel()


@pytest.mark.parametrize("layers", [
    dict(),                                                           # head only, on sentence vectors
    dict(freeze="last-n", freeze_blocks=1, lr=1e-3, max_tokens=32),   # the last layer, on hidden states
], ids=["head", "last-layer"])
def test_a_cancelled_text_fit_resumes_to_the_same_end(report, cache, tmp_path, layers):
    config = dict(backbone="all-minilm-l6-v2", epochs=4 if not layers else 3, **layers)
    whole = Trainer(report, TrainConfig(**config), tmp_path / "whole").fit()
    control = RunControl()
    stopped = Trainer(report, TrainConfig(**config), tmp_path / "part",
                      [CancelAfterEpoch(control, 2)], control).fit()
    assert stopped.status == "cancelled"
    resumed = Trainer(report, TrainConfig(**config), tmp_path / "part", resume=True).fit()
    assert resumed.status == "completed"
    assert [h["val_accuracy"] for h in resumed.history] == [h["val_accuracy"] for h in whole.history]
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]
    assert resumed.metrics["val_accuracy"] == whole.metrics["val_accuracy"]


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_cli_trains_exports_and_predicts_a_text_csv(tmp_path):
    small = write_fortunes_csv(tmp_path / "small.csv", per_class=10)
    done = run_cli("train", str(small), "--out", str(tmp_path / "run"), "--epochs", "2")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["status"] == "completed" and summary["test_accuracy"] is not None
    assert "texts" in (tmp_path / "run" / "dataset_report.txt").read_text()
    assert "calibrated: temperature" in done.stderr and "unknown above" in done.stderr
    done = run_cli("export", str(tmp_path / "run"), "--onnx", str(tmp_path / "m.onnx"))
    assert done.returncode == 0, done.stderr
    lines_file = tmp_path / "new.txt"
    lines_file.write_text("The hard disk is full again\n\nBoil the pasta for ten minutes\n", encoding="utf-8")
    done = run_cli("predict", str(tmp_path / "m.onnx"), "Quantum physics is strange", str(lines_file))
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.strip().splitlines()]
    assert [r["path"] for r in rows] == ["arg 1", "new.txt:line 1", "new.txt:line 3"]
    assert rows[0]["text"] == "Quantum physics is strange" and all(r["nearest"] in CATEGORIES for r in rows)
    assert all(r["label"] in (r["nearest"], "unknown") and r["ood_score"] is not None for r in rows)


def test_cli_refuses_an_image_backbone_for_texts_in_one_line(texts_csv, tmp_path):
    done = run_cli("train", str(texts_csv), "--out", str(tmp_path / "r"), "--model", "resnet18")
    assert done.returncode == 2 and "text encoder" in done.stderr and "Traceback" not in done.stderr


def test_a_users_hugging_face_folder_is_an_encoder_and_a_broken_one_is_refused(tmp_path):
    from engine.modalities.text.catalog import TextEncoderError, encoder_folder, is_text_backbone
    folder = tmp_path / "my-encoder"
    folder.mkdir()
    for item in encoder_folder("all-minilm-l6-v2").iterdir():
        (folder / item.name).symlink_to(item)
    assert is_text_backbone(str(folder))
    TrainConfig(backbone=str(folder)).validate()
    bundle = create_text_model(str(folder), 2)
    assert bundle.spec.name == str(folder) and bundle.spec.arch == "bert"
    with torch.inference_mode():
        assert bundle.model(torch.from_numpy(bundle.tokenizer.encode(["hello there"]))).shape == (1, 2)
    (folder / "tokenizer.json").unlink()
    assert not is_text_backbone(str(folder))
    with pytest.raises(TextEncoderError, match="no tokenizer.json"):
        encoder_folder(str(folder))


def test_auto_screens_head_recipes_judges_finalists_on_validation_and_tests_the_winner_once(report, tmp_path):
    from engine.modalities.text.search import TextRecipeSearch
    result = TextRecipeSearch(report, tmp_path / "auto", budget_s=25).run()
    assert result.status == "completed" and result.seconds < 25 + 10
    board = json.loads((tmp_path / "auto" / "leaderboard.json").read_text())
    val = len(report.split("val"))
    assert board[0]["name"] == "default recipe" and board[0]["scored_by"].startswith(f"validation split ({val} texts")
    assert board[0]["screening"] is not None                 # its cross-validation inside train, for the warning
    assert sum(1 for c in board if c["name"].startswith("head trial") and c["status"] == "done") >= 2
    assert all(c["stage"] == "screening" for c in board if c["name"].startswith("head trial"))
    fitted = next(c for c in board if c["name"] == "fitted head")      # the solved head, for texts too
    assert fitted["recipe"]["optimizer"] == "lbfgs" and fitted["score"] is not None
    assert fitted["stage"] == "final" and fitted["comparison"] or "not compared on validation" in fitted["note"]
    assert sum(1 for c in board if c["chosen"]) == 1
    metrics = json.loads((tmp_path / "auto" / "metrics.json").read_text())
    assert metrics["test_accuracy"] is not None and metrics["evaluated_on"] == "test"
    predictions = json.loads((tmp_path / "auto" / "predictions.json").read_text())
    assert len(predictions["test"]) == len(report.split("test")) and all(r["text"] for r in predictions["test"])
    assert json.loads((tmp_path / "auto" / "config.json").read_text())["backbone"] == "all-minilm-l6-v2"
