"""Proof that the modality interface is the only seam: a modality defined in tests/rows_modality.py
(rows of numbers, a small MLP as its pretrained model) goes scan -> train (head only, and the last
block) -> export -> verify -> predict through the engine's public functions, and no engine file names it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.core import modality as modalities
from engine.outputs.export import export_model
from engine.outputs.predict import load_classifier, model_modality, predict_items
from engine.training.config import TrainConfig
from engine.training.datasets import scan_any
from engine.training.trainer import Trainer
from rows_modality import BACKBONE, NAME, RowsModality, write_rows

ENGINE = Path(__file__).resolve().parents[1] / "engine"


@pytest.fixture
def rows(tmp_path):
    modality = modalities.register(RowsModality(tmp_path / "weights"))
    yield modality
    modalities.unregister(NAME)


def test_no_engine_file_names_the_third_modality():
    assert not [p for p in ENGINE.rglob("*.py") if NAME + "_modality" in p.read_text(encoding="utf-8")
                or "RowsModality" in p.read_text(encoding="utf-8")]


@pytest.mark.parametrize("freeze", ["head", "last-n"])
def test_rows_scan_train_export_verify_predict(rows, tmp_path, freeze):
    data = write_rows(tmp_path / "points.rows")
    assert modalities.for_source(data) is rows and modalities.for_backbone(BACKBONE) is rows

    report = scan_any(data, seed=0)
    assert report.modality == NAME and report.classes == ["east", "north", "south"]
    assert len(report.samples) == 120 and {"train", "val", "test"} <= {s.split for s in report.samples}
    assert any("not a label and 4 numbers" in p.reason for p in report.problems)
    assert "120 rows" in report.format_text()

    config = TrainConfig(backbone=BACKBONE, freeze=freeze, freeze_blocks=1, epochs=8, batch_size=16, lr=1e-2,
                         augmentation="none", seed=0)
    run = tmp_path / f"run-{freeze}"
    result = Trainer(report, config, run).fit()
    assert result.status == "completed", result
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.9 and metrics["modality"] == NAME
    trained = json.loads((run / "config.json").read_text())
    assert trained["backbone"] == BACKBONE and trained["freeze"] == freeze

    assert model_modality(run) is rows
    onnx_path = tmp_path / f"rows-{freeze}.onnx"
    exported = export_model(run, onnx_path)
    assert exported.top1_agreement == 1.0 and exported.max_abs_diff <= 1e-4 and exported.n_samples >= 10
    card = json.loads(onnx_path.with_suffix(".json").read_text())
    assert card["modality"] == NAME and card["verification"]["rows"] == exported.n_samples

    test_rows = [s.path for s in report.split("test")]
    truth = [report.classes[s.label] for s in report.split("test")]
    answers, scores = {}, {}
    for source in (run, onnx_path):
        classifier = load_classifier(source)
        assert classifier.kind == ("onnx" if source == onnx_path else "torch")
        predicted = predict_items(classifier, [(where, where) for where in test_rows], rows.prediction_input,
                                  top_k=2)
        answers[source] = [p.label for p in predicted.predictions]
        scores[source] = [p.ood_score for p in predicted.predictions]      # calibrated, with the unknown score
        assert np.mean([p.nearest == b for p, b in zip(predicted.predictions, truth)]) >= 0.9
    assert answers[run] == answers[onnx_path] and np.allclose(scores[run], scores[onnx_path], atol=1e-3)
    assert exported.max_score_diff is not None and card["trust"]["method"] == "max:msp+knn"


def test_a_rows_checkpoint_is_refused_by_another_modality_and_names_it(rows, tmp_path):
    data = write_rows(tmp_path / "points.rows")
    report = scan_any(data)
    run = tmp_path / "run"
    Trainer(report, TrainConfig(backbone=BACKBONE, epochs=1, augmentation="none"), run).fit()
    with pytest.raises(ValueError, match="classifies rows, not images"):
        modalities.named("image").classifier(run / "model.safetensors", "torch")


def test_a_modality_without_a_recipe_search_is_refused_in_one_line(rows, tmp_path):
    import subprocess
    import sys
    data = write_rows(tmp_path / "points.rows")
    code = ("import sys; sys.path.insert(0, 'tests'); from pathlib import Path; from engine.core import modality; "
            f"from rows_modality import RowsModality; modality.register(RowsModality(Path({str(tmp_path)!r}))); "
            "from engine.cli.main import main; "
            f"sys.exit(main(['train', {str(data)!r}, '--out', {str(tmp_path / 'auto')!r}, '--auto', '--model', "
            f"'{BACKBONE}']))")
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "--auto has no recipe search for rows yet" in done.stderr and "Traceback" not in done.stderr
