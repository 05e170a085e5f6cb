"""Smaller exports (int8, fp16): made from the verified fp32 file, verified against it on the run's own
validation and test samples, refused with the measured figures (the fp32 file written instead) when they
lose accuracy; photos (static int8, calibrated on training images) and texts (dynamic int8)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image
from test_cli import run_cli
from test_text import write_fortunes_csv

from engine.cli.main import main as cli_main
from engine.data.scan import scan_dataset
from engine.outputs import precision
from engine.outputs.export import ExportError, export_model, read_metadata
from engine.outputs.predict import load_classifier
from engine.training.config import TrainConfig
from engine.training.datasets import scan_any
from engine.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "resources" / "demo" / "fashion-mnist"


@pytest.fixture(scope="module")
def photo_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("precision") / "run"
    Trainer(scan_dataset(DEMO), TrainConfig(backbone="efficientnet_lite0", image_size=96, epochs=6, lr=3e-3), run).fit()
    return run


def ops(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_an_int8_photo_export_is_a_third_of_fp32_and_answers_like_it(photo_run, tmp_path):
    fp32 = export_model(photo_run, tmp_path / "fp32.onnx")
    result = export_model(photo_run, tmp_path / "int8.onnx", precision="int8", gate_points=5)
    check = result.precision_check
    assert result.precision == "int8" and check["written"] == "int8" and check["refused"] is None
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops(tmp_path / "int8.onnx")
    size = (tmp_path / "int8.onnx").stat().st_size
    assert size <= 0.35 * (tmp_path / "fp32.onnx").stat().st_size and check["size_ratio"] <= 0.35
    # measured on every validation and test photo, against the fp32 file, with its speed on this machine
    assert {split: figures["samples"] for split, figures in check["splits"].items()} == {"val": 50, "test": 50}
    assert check["accuracy_drop_points"] <= 5 and check["splits"]["test"]["top1_agreement"] >= 0.8
    assert "unknown_agreement" in check["splits"]["val"]
    assert all(check["latency_ms"][p]["batch_1"] > 0 and check["latency_ms"][p]["batch_16"] > 0 for p in ("fp32", "int8"))
    assert check["calibration"].endswith("images of the run's training data")
    # the card says so, in the file and beside it; the file predicts like any export
    card = read_metadata(tmp_path / "int8.onnx")
    assert card["precision"] == "int8" and card["precision_check"]["bytes"] == check["bytes"]
    assert json.loads((tmp_path / "int8.json").read_text())["precision"] == "int8"
    assert fp32.precision == "fp32" and read_metadata(tmp_path / "fp32.onnx")["precision"] == "fp32"
    classifier = load_classifier(tmp_path / "int8.onnx")
    photos = [Image.open(p).convert("RGB") for p in sorted((DEMO / "sneaker").glob("*.png"))[:4]]
    logits, scores = classifier.scored(photos)
    assert logits.shape == (4, 10) and scores is not None and np.isfinite(scores).all()


def test_an_int8_file_that_loses_accuracy_is_refused_and_the_fp32_file_is_written(photo_run, tmp_path, monkeypatch):
    """Calibrated on black images, the activations' ranges are wrong: the check sees the loss and keeps fp32."""
    black = [Image.new("RGB", (96, 96)) for _ in range(16)]
    monkeypatch.setattr(precision, "calibration_samples", lambda *_: (black, "16 black images"))
    result = export_model(photo_run, tmp_path / "m.onnx", precision="int8")
    check = result.precision_check
    assert result.precision == "fp32" and check["written"] == "fp32"
    assert check["accuracy_drop_points"] > 1 and "accuracy points" in check["refused"]
    assert "QuantizeLinear" not in ops(tmp_path / "m.onnx")                   # the verified fp32 graph
    card = read_metadata(tmp_path / "m.onnx")
    assert card["precision"] == "fp32" and card["precision_check"]["refused"] == check["refused"]
    # the CLI says it in one line and exits 1, the fp32 file in place
    assert cli_main(["export", str(photo_run), "--onnx", str(tmp_path / "cli.onnx"), "--precision", "int8"]) == 1
    assert read_metadata(tmp_path / "cli.onnx")["precision"] == "fp32"


def test_fp16_halves_the_file_and_predicts(photo_run, tmp_path):
    result = export_model(photo_run, tmp_path / "half.onnx", precision="fp16", gate_points=5)
    assert result.precision == "fp16" and 0.4 <= result.precision_check["size_ratio"] <= 0.6
    logits = load_classifier(tmp_path / "half.onnx").logits([Image.open(next((DEMO / "bag").glob("*.png"))).convert("RGB")])
    assert logits.dtype == np.float32 and logits.shape == (1, 10)


@pytest.mark.slow        # the CLI's int8 path is in the refusal test, an int8 file's predictions in the first
def test_the_cli_exports_int8_and_predict_reads_it(photo_run, tmp_path):
    done = run_cli("export", photo_run, "--onnx", tmp_path / "m.onnx", "--precision", "int8", "--gate", "5")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["precision"] == "int8" and summary["precision_check"]["size_ratio"] <= 0.35
    assert "int8: 0." in done.stderr and "x the fp32 file" in done.stderr
    predicted = run_cli("predict", tmp_path / "m.onnx", DEMO / "bag")
    assert predicted.returncode == 0 and len(predicted.stdout.splitlines()) == len(list((DEMO / "bag").iterdir()))
    bad = run_cli("export", photo_run, "--onnx", tmp_path / "x.onnx", "--precision", "int4")
    assert bad.returncode == 2 and "int4" in bad.stderr


def test_a_smaller_export_needs_the_runs_own_samples(photo_run, tmp_path):
    alone = tmp_path / "alone.safetensors"               # a checkpoint without its run folder
    alone.write_bytes((photo_run / "model.safetensors").read_bytes())
    with pytest.raises(ExportError, match="validation and test images"):
        export_model(alone, tmp_path / "m.onnx", precision="int8")
    assert not (tmp_path / "m.onnx").exists()


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("texts")
    report = scan_any(write_fortunes_csv(folder / "fortunes.csv"), seed=0)
    Trainer(report, TrainConfig(backbone="all-minilm-l6-v2", epochs=15, lr=1e-2), folder / "run").fit()
    return folder / "run"


def test_an_int8_text_export_quantizes_the_encoders_weights_and_answers_like_it(text_run, tmp_path):
    result = export_model(text_run, tmp_path / "t.onnx", precision="int8", gate_points=5)
    check = result.precision_check
    assert result.precision == "int8" and check["method"].startswith("dynamic int8")
    assert check["size_ratio"] <= 0.35 and "DynamicQuantizeLinear" in ops(tmp_path / "t.onnx")
    assert check["splits"]["test"]["top1_agreement"] >= 0.8 and check["calibration"] == ""
    assert (tmp_path / "t.tokenizer.json").is_file()
    classifier = load_classifier(tmp_path / "t.onnx")
    assert classifier.logits(["You will have a long and happy life."]).shape == (1, len(classifier.classes))


# -- OpenVINO -----------------------------------------------------------------------------------------------
def test_an_openvino_export_is_verified_by_its_runtime_and_predicts(photo_run, tmp_path):
    from engine.outputs.openvino import export_openvino
    result = export_openvino(photo_run, tmp_path / "ir", exporter="legacy")
    assert sorted(p.name for p in (tmp_path / "ir").iterdir()) == ["model.bin", "model.json", "model.xml"]
    assert result.openvino["max_abs_diff"] <= 1e-3 and result.openvino["top1_agreement"] == 1.0
    card = json.loads((tmp_path / "ir" / "model.json").read_text())
    assert card["runtime"] == "openvino" and card["precision"] == "fp32" and card["openvino_verification"]
    # predict and the classifiers take the folder as they take an .onnx file: the same answers
    export_model(photo_run, tmp_path / "m.onnx", exporter="legacy")
    photos = [Image.open(p).convert("RGB") for p in sorted((DEMO / "coat").glob("*.png"))[:6]]
    on_ir, on_onnx = load_classifier(tmp_path / "ir").scored(photos), load_classifier(tmp_path / "m.onnx").scored(photos)
    assert np.abs(on_ir[0] - on_onnx[0]).max() <= 1e-3 and np.abs(on_ir[1] - on_onnx[1]).max() <= 1e-2
    done = run_cli("predict", tmp_path / "ir", DEMO / "coat")
    assert done.returncode == 0 and json.loads(done.stdout.splitlines()[0])["top_k"]
    # the standalone example (openvino, numpy, Pillow) labels the photos as `predict` does
    example = subprocess.run([sys.executable, "openvino_predict.py", str(tmp_path / "ir"),
                              *map(str, sorted((DEMO / "coat").glob("*.png"))[:3])],
                             cwd=ROOT / "examples", capture_output=True, text=True, timeout=120)
    assert example.returncode == 0, example.stderr
    assert [json.loads(line)["label"] for line in example.stdout.splitlines()] == \
        [json.loads(line)["label"] for line in done.stdout.splitlines()[:3]]


def test_an_int8_openvino_export_is_held_to_the_same_gate(photo_run, tmp_path):
    from engine.outputs.openvino import export_openvino
    result = export_openvino(photo_run, tmp_path / "ir8", precision="int8", gate_points=5, exporter="legacy")
    assert result.precision == "int8" and result.openvino["accuracy_drop_points"] <= 5
    assert (tmp_path / "ir8" / "model.bin").stat().st_size <= 0.4 * result.precision_check["fp32_bytes"]
    done = run_cli("export", photo_run, "--openvino", tmp_path / "m.onnx")
    assert done.returncode == 2 and "is a folder" in done.stderr


def test_a_text_model_exports_to_openvino_with_its_tokenizer(text_run, tmp_path):
    from engine.outputs.openvino import export_openvino
    export_openvino(text_run, tmp_path / "ir")
    assert (tmp_path / "ir" / "model.tokenizer.json").is_file()
    classifier = load_classifier(tmp_path / "ir")
    assert classifier.logits(["A penny saved is a penny earned."]).shape == (1, len(classifier.classes))
