"""Metrics from logits, checked against a hand-computed example, and the evaluation loop behind them."""
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from engine.core.control import Cancelled, RunControl
from engine.training.metrics import classification_metrics, predict_logits

CLASSES = ["cat", "dog", "fox"]
# (true class, logits): one strong logit per image, so the prediction is that logit's class
EXAMPLE = [
    (0, [4.0, 0.0, 0.0]),     # cat -> cat
    (0, [2.0, 0.0, 0.0]),     # cat -> cat
    (0, [0.0, 3.0, 0.0]),     # cat -> dog, confidently wrong
    (1, [0.0, 2.0, 0.0]),     # dog -> dog
    (1, [0.0, 0.0, 1.0]),     # dog -> fox, mildly wrong
    (2, [0.0, 0.0, 5.0]),     # fox -> fox
]
PATHS = [f"img{i}.png" for i in range(len(EXAMPLE))]


def example_metrics(**kwargs) -> dict:
    labels = torch.tensor([label for label, _ in EXAMPLE])
    logits = torch.tensor([row for _, row in EXAMPLE])
    return classification_metrics(logits, labels, CLASSES, PATHS, **kwargs)


def softmax_of(strong: float) -> tuple[float, float]:
    """(probability of the strong class, of each other class) for logits [strong, 0, 0]."""
    total = math.exp(strong) + 2
    return math.exp(strong) / total, 1 / total


def test_accuracy_and_count():
    metrics = example_metrics()
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["count"] == 6


def test_per_class_precision_recall_f1_and_support():
    rows = {row["class"]: row for row in example_metrics()["per_class"]}
    assert [row["class"] for row in example_metrics()["per_class"]] == CLASSES
    # cat: 2 of 3 found, both cat predictions right; dog: 1 of 2, 1 of 2; fox: 1 of 1, 1 of 2
    assert rows["cat"] == {"class": "cat", "precision": 1.0, "recall": 0.6667, "f1": 0.8, "support": 3}
    assert rows["dog"] == {"class": "dog", "precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert rows["fox"] == {"class": "fox", "precision": 0.5, "recall": 1.0, "f1": 0.6667, "support": 1}


def test_confusion_matrix_rows_are_true_classes_and_columns_predictions():
    matrix = example_metrics()["confusion_matrix"]
    assert matrix == [[2, 1, 0],
                      [0, 1, 1],
                      [0, 0, 1]]
    assert matrix[0][1] == 1 and matrix[1][0] == 0, "a cat predicted as dog counts in row cat, column dog"


def test_most_confident_wrong_is_ordered_by_loss_with_its_fields():
    wrong = example_metrics()["most_confident_wrong"]
    assert [w["path"] for w in wrong] == ["img2.png", "img4.png"], "highest loss first"
    first_pred, first_true = softmax_of(3.0)
    second_pred, second_true = softmax_of(1.0)
    assert wrong[0] == {"path": "img2.png", "true": "cat", "predicted": "dog",
                        "score": pytest.approx(first_pred, abs=1e-5),
                        "loss": pytest.approx(-math.log(first_true), abs=1e-5)}
    assert wrong[1] == {"path": "img4.png", "true": "dog", "predicted": "fox",
                        "score": pytest.approx(second_pred, abs=1e-5),
                        "loss": pytest.approx(-math.log(second_true), abs=1e-5)}
    assert wrong[0]["loss"] > wrong[1]["loss"]


def test_most_confident_wrong_keeps_the_worst_only():
    wrong = example_metrics(top_wrong=1)["most_confident_wrong"]
    assert [w["path"] for w in wrong] == ["img2.png"]


def test_predictions_list_every_image_with_its_score():
    predictions = example_metrics()["predictions"]
    assert [(p["path"], p["true"], p["predicted"]) for p in predictions] == [
        ("img0.png", 0, 0), ("img1.png", 0, 0), ("img2.png", 0, 1),
        ("img3.png", 1, 1), ("img4.png", 1, 2), ("img5.png", 2, 2)]
    assert predictions[5]["score"] == pytest.approx(softmax_of(5.0)[0], abs=1e-5)


def test_empty_input_gives_empty_metrics():
    logits, labels = predict_logits(nn.Linear(4, 3), DataLoader(TensorDataset(torch.zeros(0, 4),
                                                                              torch.zeros(0, dtype=torch.long))))
    metrics = classification_metrics(logits, labels, CLASSES, [])
    assert metrics["accuracy"] is None and metrics["count"] == 0
    assert metrics["confusion_matrix"] == [[0, 0, 0]] * 3
    assert [row["support"] for row in metrics["per_class"]] == [0, 0, 0]
    assert all(row["precision"] == row["recall"] == row["f1"] == 0.0 for row in metrics["per_class"])
    assert metrics["most_confident_wrong"] == [] and metrics["predictions"] == []


# -- predict_logits ---------------------------------------------------------------------------------
class ModeRecorder(nn.Module):
    """A linear layer that remembers whether each forward pass ran in training mode."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.modes: list[bool] = []

    def forward(self, x):
        self.modes.append(self.training)
        return self.linear(x)


def five_samples(batch_size: int = 2) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(5, 4, generator=generator)
    return DataLoader(TensorDataset(inputs, torch.tensor([0, 1, 2, 1, 0])), batch_size=batch_size)


@pytest.mark.parametrize("training", [True, False])
def test_predict_logits_runs_in_eval_mode_and_restores_the_mode(training):
    model = ModeRecorder().train(training)
    loader = five_samples()
    logits, labels = predict_logits(model, loader)
    assert model.modes == [False, False, False], "every batch evaluated in eval mode"
    assert model.training is training
    inputs, targets = loader.dataset.tensors
    with torch.no_grad():
        assert torch.allclose(logits, model.linear(inputs))
    assert torch.equal(labels, targets)


def test_predict_logits_reports_progress_in_images():
    calls = []
    predict_logits(ModeRecorder(), five_samples(), progress=lambda *call: calls.append(call))
    assert calls == [("evaluate", 2, 5), ("evaluate", 4, 5), ("evaluate", 5, 5)]


def test_cancel_during_prediction_raises_and_restores_training_mode():
    model = ModeRecorder().train()
    control = RunControl()
    with pytest.raises(Cancelled):
        predict_logits(model, five_samples(), control, progress=lambda *_: control.cancel())
    assert len(model.modes) == 1, "stops before the next batch"
    assert model.training
