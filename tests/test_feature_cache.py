"""Feature and freeze-boundary caches: same training as the slow path, reuse only for identical inputs."""
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from engine.core.callbacks import Callback
from engine.data.scan import scan_dataset
from engine.data.transforms import eval_transform
from engine.models.catalog import create_model
from engine.models.layers import LayerTree, SuffixOnActivations, feature_stages
from engine.training.caches import ActivationCache, FeatureCache, plan_cache
from engine.training.config import TrainConfig
from engine.training.trainer import Trainer

EXACT = dict(image_size=64, batch_size=8, epochs=3, lr=1e-2, augmentation="none")


@pytest.fixture
def report(colour_dataset):
    return scan_dataset(colour_dataset, seed=0)


def _model(preset="head", blocks=2):
    bundle = create_model("efficientnet_lite0", 3, input_size=64)
    LayerTree(bundle.model).apply_preset(preset, blocks)
    return bundle


@pytest.mark.parametrize("freeze, path", [(dict(freeze="head"), "features"),
                                          (dict(freeze="last-n", freeze_blocks=1), "activations"),
                                          pytest.param(dict(freeze="last-n", freeze_blocks=3), "activations",
                                                       marks=pytest.mark.slow)])
def test_cached_training_matches_the_slow_path(report, tmp_path, freeze, path):
    cached = Trainer(report, TrainConfig(**EXACT, **freeze), tmp_path / "cached")
    plain = Trainer(report, TrainConfig(**EXACT, **freeze, cache="off"), tmp_path / "plain")
    fast, slow = cached.fit(), plain.fit()
    assert [h["epoch"] for h in fast.history] == [1, 2, 3]
    assert plain.path_notes == ["training on images: cache off"]
    assert any(f"cached {path}" in note for note in cached.path_notes)
    for a, b in zip(fast.history, slow.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
        assert a["accuracy"] == b["accuracy"] and a["val_accuracy"] == b["val_accuracy"]
    assert fast.metrics["val_accuracy"] == slow.metrics["val_accuracy"]
    assert fast.metrics["test_accuracy"] == slow.metrics["test_accuracy"]
    fast_weights, slow_weights = load_file(fast.checkpoint), load_file(slow.checkpoint)
    for name, tensor in fast_weights.items():
        torch.testing.assert_close(tensor, slow_weights[name], rtol=1e-3, atol=1e-5, msg=name)


def test_augmented_views_reach_the_accuracy_of_the_slow_path(report, tmp_path):
    config = dict(image_size=64, batch_size=8, epochs=6, lr=1e-2, augmentation="light", cached_views=3)
    fast = Trainer(report, TrainConfig(**config), tmp_path / "cached").fit()
    slow = Trainer(report, TrainConfig(**config, cache="off"), tmp_path / "plain").fit()
    assert fast.metrics["val_accuracy"] == slow.metrics["val_accuracy"] == 1.0


def test_the_plan_follows_the_freeze_state():
    assert plan_cache(_model("head").model).kind == "features"
    plan = plan_cache(_model("last-n", 1).model)
    lite0_stages = 9          # stem, 7 block stages, conv_head
    assert (plan.kind, plan.boundary) == ("activations", lite0_stages - 2)
    assert plan_cache(_model("none").model).kind == "images"


def test_frozen_layers_that_change_in_training_mode_are_never_cached():
    for preset in ("head", "last-n"):
        plan = plan_cache(_model(preset).model, train_frozen_bn=True)
        assert plan.kind == "images" and "BatchNorm" in plan.reason
    model = _model("last-n", 1).model
    model.blocks[0][0].drop_path.drop_prob = 0.1       # stochastic depth in a frozen block
    assert "stochastic depth" in plan_cache(model).reason


def test_unsupported_architectures_fall_back_to_images():
    model = create_model("convnext_atto", 3, weights="random").model
    LayerTree(model).apply_preset("last-n", 1)
    plan = plan_cache(model)
    assert plan.kind == "images" and "ConvNeXt" in plan.reason


def test_suffix_on_activations_computes_the_model(report):
    model = _model("last-n", 2).model
    boundary = plan_cache(model).boundary
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        prefix = torch.nn.Sequential(*feature_stages(model)[:boundary])(images)
        torch.testing.assert_close(SuffixOnActivations(model, boundary)(prefix), model(images))


def _features(cache, report, pre, transform_id="eval", content_hash=None):
    train = report.split("train")
    return cache.features([s.path for s in train], [s.label for s in train], content_hash or report.content_hash,
                          [eval_transform(pre)], transform_id, seed=0)


def test_features_are_reused_only_for_identical_inputs(report, tmp_path):
    bundle = _model("head")
    model, pre, folder = bundle.model, bundle.preprocessing, tmp_path / "features"
    first = _features(FeatureCache(model, folder), report, pre)
    again = FeatureCache(model, folder)
    assert torch.equal(_features(again, report, pre), first) and again.hits == 1, "reused from disk"
    with torch.no_grad():
        model.classifier.weight.add_(1.0)                   # the head is not part of the features
    assert _hit(model, folder, report, pre)
    for variant in (dict(transform_id="other-preprocessing"), dict(content_hash="other-dataset")):
        assert not _hit(model, folder, report, pre, **variant)
    with torch.no_grad():
        model.blocks[0][0].conv_dw.weight.mul_(1.5)          # a different backbone
    assert not _hit(model, folder, report, pre)


def _hit(model, folder, report, pre, **variant) -> bool:
    cache = FeatureCache(model, folder)
    _features(cache, report, pre, **variant)
    return cache.hits == 1


def test_a_damaged_feature_file_is_recomputed(report, tmp_path):
    bundle = _model("head")
    folder = tmp_path / "features"
    first = _features(FeatureCache(bundle.model, folder), report, bundle.preprocessing)
    for path in folder.glob("*.safetensors"):
        path.write_bytes(b"garbage")
    cache = FeatureCache(bundle.model, folder)
    assert torch.equal(_features(cache, report, bundle.preprocessing), first) and cache.misses == 1


def test_activations_depend_on_the_frozen_part_only(report, tmp_path):
    bundle = _model("last-n", 1)
    model, pre, folder = bundle.model, bundle.preprocessing, tmp_path / "activations"
    boundary = plan_cache(model).boundary
    first = _features(ActivationCache(model, boundary, folder), report, pre)
    assert first.shape[:2] == (1, len(report.split("train"))) and first.ndim == 5
    with torch.no_grad():
        model.conv_head.weight.mul_(1.5)                     # after the boundary: still valid
    cache = ActivationCache(model, boundary, folder)
    assert torch.equal(_features(cache, report, pre), first) and cache.hits == 1
    other_boundary = ActivationCache(model, boundary - 1, folder)
    _features(other_boundary, report, pre)
    assert other_boundary.misses == 1
    with torch.no_grad():
        model.blocks[0][0].conv_dw.weight.mul_(1.5)          # before the boundary: recomputed
    cache = ActivationCache(model, boundary, folder)
    _features(cache, report, pre)
    assert cache.misses == 1


def test_a_second_fit_reuses_features_until_an_image_changes(colour_dataset, tmp_path):
    config = TrainConfig(image_size=64, batch_size=8, epochs=1, augmentation="none")
    first = Trainer(scan_dataset(colour_dataset, seed=0), config, tmp_path / "a")
    first.fit()
    second = Trainer(scan_dataset(colour_dataset, seed=0), config, tmp_path / "b")
    second.fit()
    assert first.inputs.feature_cache.misses > 0 and second.inputs.feature_cache.misses == 0
    image = next((colour_dataset / "red").iterdir())
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(image)
    third = Trainer(scan_dataset(colour_dataset, seed=0), config, tmp_path / "c")
    third.fit()
    assert third.inputs.feature_cache.misses > 0


def test_too_large_a_cache_falls_back_to_images_and_says_why(report, tmp_path, monkeypatch):
    monkeypatch.setattr("engine.training.image_inputs.memory_budget", lambda: 1000)
    started = FitStart()
    config = TrainConfig(image_size=64, batch_size=8, epochs=1, freeze="last-n")
    Trainer(report, config, tmp_path / "r", [started]).fit()
    assert started.info["path"] == "images"
    assert "cached activations would need" in started.info["path_note"]


class FitStart(Callback):
    def on_fit_start(self, info):
        self.info = info
