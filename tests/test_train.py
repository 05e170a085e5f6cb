"""Training engine on small real images: events, checkpoints, metrics, cancel, pause, reproducibility."""
import json
import threading

import pytest
import torch
from safetensors.torch import load_file

from engine.core.callbacks import Callback
from engine.models.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_meta
from engine.core.control import RunControl
from engine.data.dataset import scan_dataset
from engine.models.layers import LayerTree
from engine.models.catalog import create_model
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


@pytest.fixture
def report(colour_dataset):
    return scan_dataset(colour_dataset, seed=0)


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


class PauseOnce(Callback):
    def __init__(self, control):
        self.control = control
        self.paused_at = None

    def on_batch_end(self, step, logs):
        if self.paused_at is None:
            self.paused_at = step
            self.control.pause()
            threading.Timer(0.3, self.control.resume).start()


def test_pause_blocks_until_resume(report, tmp_path):
    control = RunControl()
    pauser = PauseOnce(control)
    result = Trainer(report, TrainConfig(**SMALL, freeze="head", cache="off"), tmp_path / "run",
                     [pauser], control).fit()
    assert pauser.paused_at == 1 and result.status == "completed"


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


@pytest.mark.parametrize("balance", ["loss", "sampler"])
def test_class_balancing_options_train(report, tmp_path, balance):
    result = Trainer(report, TrainConfig(**SMALL, balance=balance), tmp_path / "run").fit()
    assert result.status == "completed"


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
