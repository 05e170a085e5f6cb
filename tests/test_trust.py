"""Calibrated confidence and "unknown" for inputs unlike anything taught: the math on known answers, then
real runs (photos of clothes, fortunes) through the checkpoint, `predict`, the ONNX file and the CLI."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage
import torch
from PIL import Image

from engine.core.runfolder import RunFolder
from engine.data.scan import scan_dataset
from engine.training.datasets import scan_any
from engine.models import trust
from engine.models.checkpoint import load_checkpoint, read_checkpoint_meta
from engine.outputs.export import export_model
from engine.outputs.predict import UNKNOWN, load_classifier, predict_images, predict_items, unknown_scores
from engine.training.calibration import run_scores, set_run_accept, view_mean
from engine.training.config import TrainConfig
from engine.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "resources" / "demo" / "fashion-mnist"
PHOTOS = Path(skimage.__file__).parent / "data"
FAR_PHOTOS = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png", "retina.jpg"]
FORTUNES = Path("/usr/share/games/fortunes")


# -- the math ------------------------------------------------------------------------------------------
def test_temperature_scaling_recovers_the_temperature_labels_were_drawn_with():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4000, 5, generator=generator) * 3
    labels = torch.multinomial((logits / 2.5).softmax(-1), 1, generator=generator).squeeze(1)
    assert trust.fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.08)
    before = trust.expected_calibration_error(logits.softmax(-1).numpy(), labels.numpy())
    after = trust.expected_calibration_error((logits / 2.5).softmax(-1).numpy(), labels.numpy())
    assert before > 0.1 and after < 0.03


def test_auroc_is_the_mann_whitney_statistic_with_ties_counted_half():
    from sklearn.metrics import roc_auc_score
    rng = np.random.default_rng(0)
    known, new = rng.integers(0, 6, 300).astype(float), rng.integers(2, 9, 200).astype(float)
    expected = roc_auc_score(np.r_[np.zeros(300), np.ones(200)], np.r_[known, new])
    assert trust.auroc(known, new) == pytest.approx(expected)
    assert trust.auroc(np.zeros(3), np.ones(3)) == 1.0 and trust.auroc(np.ones(3), np.ones(3)) == 0.5


def test_the_threshold_grid_accepts_the_share_it_names():
    scores = np.random.default_rng(1).normal(size=2000)
    grid = trust.threshold_grid(scores)
    for accept in (0.5, 0.8, 0.95, 0.99):
        threshold = trust.threshold_at({"thresholds": grid}, accept)
        assert accept <= (scores <= threshold).mean() <= accept + 0.001       # never less than it says
    with pytest.raises(ValueError, match="between 0.5 and 1"):
        trust.threshold_at({"thresholds": grid}, 0.3)


def test_the_default_score_turns_away_what_is_far_from_every_training_sample_even_when_the_model_is_sure():
    rng = torch.Generator().manual_seed(0)
    centres = torch.eye(4, 16) * 6
    labels = torch.arange(4).repeat_interleave(100)
    features = centres[labels] + torch.randn(400, 16, generator=rng)
    weight = centres                                              # logits: similarity to each centre
    known = centres[labels[:80]] + torch.randn(80, 16, generator=rng)
    scorer = trust.fit_default(features, labels, 4, known, known @ weight.T)
    far = torch.randn(50, 16, generator=rng) + 40 * torch.eye(16)[5]     # far away, on no class's axis
    far[:, 0] += 12                                                   # ...yet its logits pick class 0 surely
    with torch.no_grad():
        known_scores, far_scores = scorer(known, known @ weight.T), scorer(far, far @ weight.T)
    assert (far @ weight.T).softmax(-1).amax(-1).min() > 0.99
    assert trust.auroc(known_scores.numpy(), far_scores.numpy()) == 1.0
    rebuilt = trust.rebuild_scorer(scorer.method, scorer.state_dict())
    assert torch.allclose(rebuilt(far, far @ weight.T), far_scores)


def test_view_mean_averages_each_batchs_views_in_call_order():
    batches = [torch.ones(2, 3), 3 * torch.ones(2, 3), torch.zeros(1, 3), 2 * torch.ones(1, 3)]
    assert torch.equal(view_mean(batches, 3), torch.tensor([[2.0] * 3, [2.0] * 3, [1.0] * 3]))
    assert view_mean([], 3) is None


# -- a real photo run ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def photo_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("trust") / "run"
    config = TrainConfig(backbone="efficientnet_lite0", image_size=96, epochs=8, lr=3e-3)
    Trainer(scan_dataset(DEMO), config, run).fit()
    return run


@pytest.fixture(scope="module")
def far_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("far")
    for name in FAR_PHOTOS:
        Image.open(PHOTOS / name).convert("RGB").save(folder / f"{Path(name).stem}.png")
    return folder


def test_a_run_records_its_calibration_and_unknown_score(photo_run):
    metrics = json.loads(RunFolder(photo_run).metrics.read_text())
    calibration, unknown = metrics["calibration"], metrics["unknown"]
    assert 0.05 < calibration["temperature"] < 20 and calibration["fitted_on"] == "val"
    assert calibration["val_nll_after"] <= calibration["val_nll_before"]      # what temperature scaling fits
    assert calibration["test_ece_after"] < 0.2
    assert {bar["count"] for bar in calibration["reliability"]["after"]} and calibration["reliability"]["split"] == "test"
    assert unknown["method"] == trust.DEFAULT_METHOD and unknown["accept"] == 0.95
    assert 0.9 <= unknown["val_accepted"] <= 1.0 and unknown["test_accepted"] > 0.75
    meta = read_checkpoint_meta(RunFolder(photo_run).checkpoint)
    assert meta["trust"]["threshold"] == pytest.approx(unknown["threshold"]) and len(meta["trust"]["thresholds"]) == 101
    _, checkpoint = load_checkpoint(RunFolder(photo_run).checkpoint)
    assert checkpoint.trust_state["parts.1.bank"].dtype == torch.float16
    rows = json.loads(RunFolder(photo_run).predictions.read_text())["test"]
    assert all("ood_score" in row for row in rows)
    probabilities = np.array([row["probabilities"] for row in rows])
    assert np.allclose(probabilities.sum(1), 1, atol=1e-4)


def test_photos_of_another_world_are_unknown_with_their_closest_class(photo_run, far_folder):
    classifier = load_classifier(photo_run, "cpu")
    far = predict_images(classifier, [far_folder])
    assert [p.label for p in far.predictions] == [UNKNOWN] * len(FAR_PHOTOS)
    assert all(p.unlike_training and p.nearest in classifier.classes and p.ood_score > p.threshold
               for p in far.predictions)
    known = predict_images(classifier, [DEMO / "bag", DEMO / "trouser"])
    assert np.mean([p.label != UNKNOWN for p in known.predictions]) >= 0.85
    assert all(p.label in (p.nearest, UNKNOWN) for p in known.predictions)


def test_accept_moves_the_threshold_and_keeping_it_reaches_predict(photo_run, far_folder, tmp_path):
    classifier = load_classifier(photo_run, "cpu")
    paths = [(str(p), str(p)) for p in sorted((DEMO / "sneaker").iterdir())[:20]]
    from engine.outputs.predict import read_image_input
    strict = predict_items(classifier, paths, read_image_input, accept=0.6)
    loose = predict_items(classifier, paths, read_image_input, accept=1.0)
    assert strict.predictions[0].threshold < loose.predictions[0].threshold
    assert sum(p.label == UNKNOWN for p in strict.predictions) >= sum(p.label == UNKNOWN for p in loose.predictions)
    copy = tmp_path / "run"
    import shutil
    shutil.copytree(photo_run, copy)
    unknown = set_run_accept(copy, 0.8)
    assert unknown["accept"] == 0.8 and unknown["val_accepted"] == pytest.approx(0.8, abs=0.06)
    assert load_classifier(copy, "cpu").meta["trust"]["threshold"] == pytest.approx(unknown["threshold"])
    scores, skipped = unknown_scores(copy, [str(far_folder)])
    assert len(scores) == len(FAR_PHOTOS) and not skipped and (scores > unknown["threshold"]).all()
    val = run_scores(copy)["val"]
    assert (val <= unknown["threshold"]).mean() == pytest.approx(unknown["val_accepted"])


def test_the_onnx_file_carries_the_calibrated_probabilities_and_the_score(photo_run, far_folder, tmp_path):
    result = export_model(photo_run, tmp_path / "model.onnx")
    assert result.max_score_diff is not None and result.max_score_diff < 1e-3
    card = json.loads((tmp_path / "model.json").read_text())
    assert set(card["outputs"]) == {"logits", "probabilities", "ood_score"}
    assert card["trust"]["method"] == trust.DEFAULT_METHOD and card["verification"]["max_score_diff"] < 1e-3
    import onnxruntime as ort
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits", "probabilities", "ood_score"]
    onnx_classifier = load_classifier(tmp_path / "model.onnx")
    torch_classifier = load_classifier(photo_run, "cpu")
    inputs = [str(p) for p in sorted(far_folder.iterdir())] + [str(p) for p in sorted((DEMO / "coat").iterdir())[:6]]
    from_onnx, from_torch = predict_images(onnx_classifier, inputs), predict_images(torch_classifier, inputs)
    assert [p.label for p in from_onnx.predictions] == [p.label for p in from_torch.predictions]
    assert np.allclose([p.ood_score for p in from_onnx.predictions], [p.ood_score for p in from_torch.predictions],
                       atol=1e-3)
    assert from_onnx.predictions[0].threshold == pytest.approx(from_torch.predictions[0].threshold)
    import importlib.util                  # the standalone example says "unknown" from the file alone
    spec = importlib.util.spec_from_file_location("onnx_predict", ROOT / "examples" / "onnx_predict.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    rows = example.OnnxImageClassifier(str(tmp_path / "model.onnx")).predict(inputs, top_k=1)
    assert [row["label"] for row in rows] == [p.label for p in from_onnx.predictions]
    assert np.allclose([row["ood_score"] for row in rows], [p.ood_score for p in from_onnx.predictions], atol=1e-5)


def test_predict_json_rows_carry_the_score_threshold_label_and_top_k(photo_run, far_folder):
    image = far_folder / "astronaut.png"
    out = subprocess.run([sys.executable, str(ROOT / "main.py"), "predict", str(photo_run), str(image),
                          "--json", "--top-k", "2", "--device", "cpu"], capture_output=True, text=True, check=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    assert row["label"] == "unknown" and row["ood_score"] > row["threshold"]
    assert row["nearest"] == row["top_k"][0]["label"] and len(row["top_k"]) == 2
    refused = subprocess.run([sys.executable, str(ROOT / "main.py"), "predict", str(photo_run), str(image),
                              "--accept", "0.2"], capture_output=True, text=True)
    assert refused.returncode != 0 and "between 0.5 and 1" in refused.stderr and "Traceback" not in refused.stderr


# -- texts -------------------------------------------------------------------------------------------
def fortunes(category: str, count: int) -> list[str]:
    text = (FORTUNES / category).read_text(encoding="utf-8", errors="replace")
    items = [" ".join(t.split()) for t in text.split("\n%\n")]
    return [t for t in items if 20 < len(t) < 300][:count]


@pytest.mark.skipif(not (FORTUNES / "computers").is_file(), reason="Debian's fortunes package is not installed")
def test_a_text_run_is_calibrated_and_scores_texts_the_same_in_onnx(tmp_path):
    data = tmp_path / "fortunes.csv"
    with open(data, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for category in ("computers", "food", "science"):
            writer.writerows((text, category) for text in fortunes(category, 40))
    run = tmp_path / "run"
    Trainer(scan_any(data, seed=0), TrainConfig(backbone="all-minilm-l6-v2", epochs=15, lr=1e-2), run).fit()
    metrics = json.loads(RunFolder(run).metrics.read_text())
    assert metrics["calibration"]["val_nll_after"] <= metrics["calibration"]["val_nll_before"]
    assert metrics["unknown"]["method"] == trust.DEFAULT_METHOD
    export_model(run, tmp_path / "text.onnx")
    texts = [("a", "The compiler rejected my program again"), ("b", "zzkq 4471 vvvv xx 0x7fff qqq"),
             ("c", "Bake the bread for forty minutes")]
    from engine.modalities.text.predict import read_text_input
    from_torch = predict_items(load_classifier(run, "cpu"), texts, read_text_input)
    from_onnx = predict_items(load_classifier(tmp_path / "text.onnx"), texts, read_text_input)
    assert [p.label for p in from_torch.predictions] == [p.label for p in from_onnx.predictions]
    assert np.allclose([p.ood_score for p in from_torch.predictions], [p.ood_score for p in from_onnx.predictions],
                       atol=1e-3)
    scores = {p.path: p.ood_score for p in from_torch.predictions}
    assert scores["b"] > scores["a"] and scores["b"] > scores["c"]


# -- Try it ------------------------------------------------------------------------------------------
def test_try_it_says_an_unlike_photo_is_unknown_and_names_the_closest_class(qtbot, photo_run, far_folder):
    from PySide6.QtCore import QObject

    from engine.project import RunRecord
    from gui.predict_panel import VERDICT_ROLE, PredictPanel
    from gui.state import AppState
    from gui.workers import TaskGroup
    owner = QObject()
    tasks, state = TaskGroup(owner), AppState()
    panel = PredictPanel(state, tasks)
    qtbot.addWidget(panel)
    panel.resize(900, 600)
    panel.show()
    state.runs.append(RunRecord(str(photo_run), "2026-12-04T03:00:00", "efficientnet_lite0", "completed"))
    known = sorted((DEMO / "trouser").iterdir())[0]
    with qtbot.waitSignal(panel.predictions_shown, timeout=120_000) as shown:
        panel.predict([str(far_folder / "astronaut.png"), str(known)])
    report = shown.args[0]
    rows = {p.path: row for row, p in enumerate(report.predictions)}
    verdict = panel.table.item(rows[str(far_folder / "astronaut.png")], 2).data(VERDICT_ROLE)
    closest = report.predictions[rows[str(far_folder / "astronaut.png")]].nearest
    assert verdict == f"Not like anything it was trained on — closest: {closest}"
    assert not panel.table.item(rows[str(known)], 2).data(VERDICT_ROLE)
    panel.grab()                                       # paints the verdict above the bars
    tasks.shutdown()
