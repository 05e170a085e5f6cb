"""Training engine on small real images: events, checkpoints, metrics, cancel, pause, reproducibility."""
import json
import threading
import time

import pytest
import torch
import torch.nn.functional as F
from conftest import COLOURS, write_colour_dataset
from safetensors.torch import load_file

from engine.core.callbacks import Callback
from engine.core.control import RunControl
from engine.data.scan import scan_dataset
from engine.models.catalog import create_model
from engine.models.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_meta
from engine.models.layers import LayerTree
from engine.training.config import TrainConfig
from engine.training.optim import param_groups
from engine.training.trainer import Trainer, plan_stages

SMALL = dict(image_size=64, batch_size=8, epochs=2)


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_fit_start(self, info):
        self.events.append(("fit_start", info))

    def on_batch_end(self, step, logs):
        self.events.append(("batch", logs))

    def on_epoch_end(self, epoch, logs):
        self.events.append(("epoch", logs))

    def on_fit_end(self, result):
        self.events.append(("fit_end", result))

    def on_error(self, message):
        self.events.append(("error", message))

    def kinds(self):
        return [kind for kind, _ in self.events]


def _is_plain(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


class CriterionSpy(Callback):
    """Records every training-loss computation of a trainer (a forward hook on its `criterion`) and the
    loss each batch event reports, indexed by step."""

    def __init__(self):
        self.trainer = None
        self.calls: list[tuple[torch.Tensor, torch.Tensor, float]] = []     # (outputs, targets, loss)
        self.reported: dict[int, float] = {}

    def on_fit_start(self, info):
        self.trainer.criterion.register_forward_hook(self._record)

    def _record(self, module, inputs, loss):
        outputs, targets = inputs
        self.calls.append((outputs.detach().clone(), targets.clone(), float(loss.detach())))

    def on_batch_end(self, step, logs):
        self.reported[step] = logs["loss"]

    def targets(self) -> torch.Tensor:
        return torch.cat([targets for _, targets, _ in self.calls])


def spied_trainer(report, config, run_dir, callbacks=(), control=None) -> tuple[Trainer, CriterionSpy]:
    spy = CriterionSpy()
    trainer = Trainer(report, config, run_dir, [*callbacks, spy], control)
    spy.trainer = trainer
    return trainer, spy


@pytest.fixture
def report(colour_dataset):
    return scan_dataset(colour_dataset, seed=0)


@pytest.fixture
def imbalanced_report(tmp_path):
    """Five times more red images than blue ones: 'blue' is class 0, the minority."""
    root = tmp_path / "imbalanced"
    write_colour_dataset(root, per_class=40, colours={"red": COLOURS["red"]})
    write_colour_dataset(root, per_class=8, seed=1, colours={"blue": COLOURS["blue"]})
    return scan_dataset(root, seed=0)


def train_label_counts(report) -> torch.Tensor:
    labels = torch.tensor([s.label for s in report.split("train")])
    return torch.bincount(labels, minlength=len(report.classes)).float()


def test_head_only_fit_learns_colours_and_writes_a_run(report, tmp_path):
    recorder = Recorder()
    result = Trainer(report, TrainConfig(**{**SMALL, "epochs": 8, "lr": 1e-2}), tmp_path / "run",
                     [recorder]).fit()
    assert result.status == "completed"
    kinds = recorder.kinds()
    assert kinds[0] == "fit_start" and kinds[-1] == "fit_end" and kinds.count("epoch") == 8
    assert recorder.events[0][1]["path"] == "features"
    assert all(_is_plain(payload) for _, payload in recorder.events), "events carry plain values only"
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["classes"] == ["blue", "green", "red"]
    assert metrics["val_accuracy"] == 1.0
    assert {"test_accuracy", "per_class", "confusion_matrix"} <= set(metrics)
    assert len(metrics["confusion_matrix"]) == 3
    assert (tmp_path / "run" / "history.json").exists()


def test_fine_tuning_last_blocks_updates_them_and_keeps_frozen_ones(report, tmp_path):
    trainer = Trainer(report, TrainConfig(**SMALL, freeze="last-n", freeze_blocks=1), tmp_path / "run")
    recorder = Recorder()
    trainer.callbacks.callbacks.append(recorder)
    before = create_model("efficientnet_lite0").model.state_dict()
    trainer.fit()
    assert recorder.events[0][1]["path"] == "activations"      # trains on the frozen blocks' output
    after = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert torch.equal(before["blocks.0.0.conv_dw.weight"], after["blocks.0.0.conv_dw.weight"])
    assert torch.equal(before["bn1.running_mean"], after["bn1.running_mean"]), "frozen BN statistics kept"
    assert not torch.equal(before["blocks.6.0.conv_pw.weight"], after["blocks.6.0.conv_pw.weight"])


def test_explicit_freeze_state_from_a_tree_is_what_trains(report, tmp_path):
    bundle = create_model("efficientnet_lite0", len(report.classes), input_size=64)
    tree = LayerTree(bundle.model)
    tree.apply_preset("head")
    tree.set_trainable("blocks.5", True)
    frozen = tree.frozen_parameter_names()
    trainer = Trainer(report, TrainConfig(**{**SMALL, "epochs": 1}, frozen_parameters=frozen), tmp_path / "run")
    trainer.fit()
    assert trainer.tree.frozen_parameter_names() == frozen


def test_checkpoint_carries_metadata_and_reloads_without_pickle(report, tmp_path):
    Trainer(report, TrainConfig(**SMALL), tmp_path / "run").fit()
    model, checkpoint = load_checkpoint(tmp_path / "run" / "model.safetensors")
    assert checkpoint.classes == ["blue", "green", "red"]
    assert checkpoint.preprocessing.input_size == 64
    assert checkpoint.meta["backbone"] == "efficientnet_lite0"
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 3)


@pytest.mark.parametrize("content", [b"garbage", b""])
def test_not_a_checkpoint_is_a_clear_error(tmp_path, content):
    path = tmp_path / "x.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError):
        read_checkpoint_meta(path)


def test_same_seed_gives_the_same_run(report, tmp_path):
    config = dict(**SMALL, freeze="last-n", freeze_blocks=1)
    first = Trainer(report, TrainConfig(**config), tmp_path / "a").fit().history
    second = Trainer(report, TrainConfig(**config), tmp_path / "b").fit().history
    assert [h["loss"] for h in first] == [h["loss"] for h in second]


class CancelAfterFirstEpoch(Callback):
    def __init__(self, control):
        self.control = control

    def on_epoch_end(self, epoch, logs):
        self.control.cancel()


def test_cancel_stops_within_a_batch_and_keeps_the_best_checkpoint(report, tmp_path):
    control = RunControl()
    recorder = Recorder()
    result = Trainer(report, TrainConfig(**{**SMALL, "epochs": 5}, freeze="none"), tmp_path / "run",
                     [CancelAfterFirstEpoch(control), recorder], control).fit()
    assert result.status == "cancelled"
    assert recorder.kinds().count("epoch") == 1
    assert read_checkpoint_meta(result.checkpoint)["epoch"] == 1


class PauseAtFirstBatch(Callback):
    """Pauses the run from the worker thread at its first batch, as the window's Pause button would, and
    timestamps every batch or epoch event after that."""

    def __init__(self, control):
        self.control = control
        self.paused_at = None
        self.pausing = threading.Event()
        self.event_after_pause = threading.Event()
        self.times_after_pause: list[float] = []

    def on_batch_end(self, step, logs):
        if self.paused_at is None:
            self.paused_at = step
            self.control.pause()
            self.pausing.set()
        else:
            self._later_event()

    def on_epoch_end(self, epoch, logs):
        self._later_event()

    def _later_event(self):
        self.times_after_pause.append(time.monotonic())
        self.event_after_pause.set()


def fit_on_a_thread(trainer: Trainer) -> tuple[threading.Thread, list]:
    """Start `trainer.fit()` on a worker thread; the list gets its FitResult or exception."""
    outcome = []

    def run():
        try:
            outcome.append(trainer.fit())
        except Exception as exc:      # re-raised by the test through the outcome
            outcome.append(exc)
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    return worker, outcome


def test_pause_blocks_until_resume(report, tmp_path):
    control = RunControl()
    pauser = PauseAtFirstBatch(control)
    trainer, spy = spied_trainer(report, TrainConfig(**SMALL, freeze="head", cache="off"), tmp_path / "run",
                                 [pauser], control)
    worker, outcome = fit_on_a_thread(trainer)
    try:
        assert pauser.pausing.wait(120), "the first batch never ended"
        steps_when_paused = len(spy.calls)
        assert not pauser.event_after_pause.wait(0.5), "a batch or epoch ended while paused"
        assert len(spy.calls) == steps_when_paused == 1, "no training step while paused"
    finally:
        resumed_at = time.monotonic()
        control.resume()
        worker.join(120)
    assert not worker.is_alive()
    result = outcome[0]
    if isinstance(result, Exception):
        raise result
    assert pauser.paused_at == 1 and result.status == "completed"
    assert min(pauser.times_after_pause) >= resumed_at, "training went on only after resume"
    assert len(result.history) == SMALL["epochs"] and len(spy.calls) > steps_when_paused


def test_early_stopping_ends_the_fit(report, tmp_path):
    config = TrainConfig(**{**SMALL, "epochs": 30}, lr=1e-5, early_stopping=1)
    result = Trainer(report, config, tmp_path / "run").fit()
    assert result.status == "stopped-early" and len(result.history) < 30


def test_two_stage_recipe_trains_head_then_everything_at_lower_rate(report, tmp_path):
    config = TrainConfig(**{**SMALL, "epochs": 3}, recipe="two-stage", head_epochs=1, lr=1e-2)
    stages = plan_stages(config)
    assert [(s.preset, s.epochs) for s in stages] == [("head", 1), ("none", 2)]
    assert stages[1].lr == pytest.approx(1e-3)
    result = Trainer(report, config, tmp_path / "run").fit()
    assert [h["stage"] for h in result.history] == ["head", "fine-tune", "fine-tune"]


def test_layer_decay_gives_deeper_blocks_smaller_rates():
    model = create_model("efficientnet_lite0", 3, weights="random").model
    groups = param_groups(model, lr=1.0, layer_decay=0.5, weight_decay=0.01)
    rates = sorted({g["lr"] for g in groups})
    assert max(rates) == 1.0 and min(rates) == pytest.approx(0.5 ** 8)
    assert all(g["weight_decay"] == 0 for g in groups if all(p.ndim == 1 for p in g["params"]))


def test_loss_balancing_weights_each_class_inversely_to_its_count(imbalanced_report, tmp_path):
    config = TrainConfig(**SMALL, balance="loss")
    trainer, spy = spied_trainer(imbalanced_report, config, tmp_path / "run")
    result = trainer.fit()
    assert result.status == "completed"
    counts = train_label_counts(imbalanced_report)
    assert counts[0] * 3 < counts[1], "the dataset is imbalanced"
    expected = counts.sum() / (counts * len(counts))
    assert torch.allclose(trainer.criterion.weight, expected)
    assert trainer.criterion.weight[0] > 3 * trainer.criterion.weight[1], "the minority class weighs more"
    # every training loss, and the loss each batch event reports, is the class-weighted loss
    differs = 0
    for step, (outputs, targets, loss) in enumerate(spy.calls, start=1):
        weighted = F.cross_entropy(outputs, targets, weight=expected, label_smoothing=config.label_smoothing)
        plain = F.cross_entropy(outputs, targets, label_smoothing=config.label_smoothing)
        assert loss == pytest.approx(float(weighted), rel=1e-5)
        assert spy.reported[step] == pytest.approx(loss)
        differs += abs(float(weighted) - float(plain)) > 1e-3
    assert differs, "weighting changed the loss of mixed batches"


def test_sampler_balancing_draws_the_minority_class_as_often_as_the_majority(imbalanced_report, tmp_path):
    config = TrainConfig(**{**SMALL, "epochs": 8}, balance="sampler")
    trainer, spy = spied_trainer(imbalanced_report, config, tmp_path / "run")
    result = trainer.fit()
    assert result.status == "completed"
    assert trainer.criterion.weight is None, "the sampler balances; the loss is not weighted as well"
    counts = train_label_counts(imbalanced_report)
    drawn = spy.targets()
    assert len(drawn) == config.epochs * counts.sum(), "an epoch draws as many images as the train split"
    minority_share = float((drawn == 0).float().mean())
    assert counts[0] / counts.sum() < 0.2, "the train split holds few minority images"
    assert 0.4 < minority_share < 0.6


def test_without_balancing_each_epoch_draws_every_image_once(imbalanced_report, tmp_path):
    config = TrainConfig(**SMALL)
    trainer, spy = spied_trainer(imbalanced_report, config, tmp_path / "run")
    trainer.fit()
    assert trainer.criterion.weight is None
    counts = train_label_counts(imbalanced_report)
    assert torch.equal(torch.bincount(spy.targets(), minlength=2).float(), config.epochs * counts)


def test_everything_frozen_is_a_clear_error(report, tmp_path):
    bundle = create_model("efficientnet_lite0", 3, input_size=64)
    frozen = [n for n, _ in bundle.model.named_parameters()]
    recorder = Recorder()
    with pytest.raises(ValueError, match="every layer is frozen"):
        Trainer(report, TrainConfig(**SMALL, frozen_parameters=frozen), tmp_path / "run", [recorder]).fit()
    assert recorder.kinds()[-1] == "error"


@pytest.mark.parametrize("bad", [dict(epochs=0), dict(optimizer="adam"), dict(image_size=8),
                                 dict(recipe="two-stage", epochs=2, head_epochs=2)])
def test_invalid_config_is_rejected(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad).validate()


def test_two_stage_second_stage_follows_an_explicit_tree_state():
    frozen = ["conv_stem.weight", "bn1.weight", "bn1.bias"]
    stages = plan_stages(TrainConfig(epochs=4, recipe="two-stage", head_epochs=1, frozen_parameters=frozen))
    assert stages[0].preset == "head" and stages[0].frozen is None
    assert stages[1].frozen == frozen


@pytest.mark.parametrize("overrides, path, augmented, decoded_once", [
    (dict(augmentation="light"), "features", False, False),       # head only: one un-augmented view
    (dict(augmentation="light", cached_views=2), "features", True, True),
    (dict(augmentation="light", freeze="none"), "images", True, True),
    (dict(augmentation="light", freeze="none", cache="off"), "images", True, False),
    (dict(augmentation="none", freeze="none"), "images", False, True),
])
def test_fit_start_says_what_trains_and_whether_it_is_augmented(report, tmp_path, overrides, path, augmented,
                                                                 decoded_once):
    recorder = Recorder()
    config = TrainConfig(**{**SMALL, "epochs": 1, **overrides})
    Trainer(report, config, tmp_path / "run", [recorder]).fit()
    info = recorder.events[0][1]
    assert (info["path"], info["augmented"], info["images_decoded_once"]) == (path, augmented, decoded_once)
