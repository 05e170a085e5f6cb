"""The frozen pass on ONNX Runtime: the same features as PyTorch, one export per frozen part, never a
damaged or disagreeing file trusted, PyTorch whenever ONNX Runtime would not pay."""
import json

import pytest
import torch

from engine.core.paths import cache_dir
from engine.data.scan import scan_dataset
from engine.data.transforms import eval_transform
from engine.models.catalog import create_model
from engine.models.layers import LayerTree
from engine.training import frozen_runtime
from engine.training.caches import FeatureCache
from engine.training.config import TrainConfig
from engine.training.trainer import Trainer

SIZE = 64
FIT = dict(image_size=SIZE, batch_size=8, epochs=2, lr=1e-2, augmentation="none")


@pytest.fixture
def report(colour_dataset):
    return scan_dataset(colour_dataset, seed=0)


@pytest.fixture
def no_break_even(monkeypatch):
    """The few images of a test pass are far below the real break-even: export for any pass."""
    monkeypatch.setattr(frozen_runtime, "BREAK_EVEN_IMAGES", 0)


def _model(preset="head", blocks=1):
    bundle = create_model("efficientnet_lite0", 3, input_size=SIZE)
    bundle.model.to(memory_format=torch.channels_last)       # as the trainer runs it
    LayerTree(bundle.model).apply_preset(preset, blocks)
    return bundle


def _pass(cache, report, pre):
    train = report.split("train")
    return cache.features([s.path for s in train], [s.label for s in train], report.content_hash,
                          [eval_transform(pre)], "eval", seed=0)


def _exported():
    return sorted((cache_dir() / "frozen-onnx").glob("*.onnx"))


def _fit(report, run_dir, monkeypatch, **config):
    monkeypatch.setenv("TRANSFERLAB_CACHE_DIR", str(run_dir.parent / f"{run_dir.name}-cache"))  # no reuse
    trainer = Trainer(report, TrainConfig(**FIT, **config), run_dir)
    result = trainer.fit()
    predictions = json.loads((run_dir / "predictions.json").read_text())
    chosen = {split: [p["predicted"] for p in rows] for split, rows in predictions.items()}
    return trainer, result, chosen, json.loads((run_dir / "config.json").read_text())


@pytest.mark.parametrize("freeze", [dict(freeze="head"), dict(freeze="last-n", freeze_blocks=1)])
def test_a_fit_gives_the_same_features_and_predictions_with_both_runtimes(report, tmp_path, monkeypatch,
                                                                         no_break_even, freeze):
    onnx, onnx_result, onnx_chosen, onnx_config = _fit(report, tmp_path / "onnx", monkeypatch, **freeze)
    torch_, torch_result, torch_chosen, torch_config = _fit(report, tmp_path / "torch", monkeypatch, **freeze,
                                                            frozen_runtime="pytorch")
    assert onnx.inputs.feature_cache.runtime_used == "onnxruntime" and onnx_config["frozen_pass"] == "onnxruntime"
    assert torch_.inputs.feature_cache.runtime_used == "pytorch" and torch_config["frozen_pass"] == "pytorch"
    assert any(note.startswith("frozen layers ran in ONNX Runtime") for note in onnx.path_notes)
    assert "frozen layers ran in PyTorch: frozen_runtime is 'pytorch'" in torch_.path_notes
    ours, theirs = onnx.inputs.feature_cache._memory, torch_.inputs.feature_cache._memory      # same keys: same inputs
    assert ours.keys() == theirs.keys() and len(ours) >= 2
    for key, reference in theirs.items():
        scale = max(1.0, float(reference.abs().max()))
        assert float((ours[key] - reference).abs().max()) <= frozen_runtime.TOLERANCE * scale
    assert onnx_chosen == torch_chosen
    assert onnx_result.metrics["val_accuracy"] == torch_result.metrics["val_accuracy"]
    for a, b in zip(onnx_result.history, torch_result.history):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=2e-2)


def test_the_exported_file_is_reused_even_below_the_break_even(report, monkeypatch, no_break_even):
    bundle = _model()
    first = FeatureCache(bundle.model, cache_dir() / "first")
    _pass(first, report, bundle.preprocessing)
    assert first.runner.exports == 1 and len(_exported()) == 1
    assert "exported in" in first.runtime_note
    monkeypatch.setattr(frozen_runtime, "BREAK_EVEN_IMAGES", 10**6)
    second = FeatureCache(bundle.model, cache_dir() / "second")       # features not cached: a new pass
    _pass(second, report, bundle.preprocessing)
    assert second.runner.exports == 0 and second.runtime_used == "onnxruntime"
    assert "exported file reused" in second.runtime_note


def test_a_damaged_onnx_file_is_exported_again(report, no_break_even):
    bundle = _model()
    reference = _pass(FeatureCache(bundle.model, cache_dir() / "first", frozen_runtime="pytorch"), report,
                      bundle.preprocessing)
    cache = FeatureCache(bundle.model, cache_dir() / "second")
    path = frozen_runtime.onnx_path(cache.runner.folder, cache.stage, cache.fingerprint, SIZE)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x08\x07" + b"not an onnx file" * 1000)          # a protobuf that stops half-way
    features = _pass(cache, report, bundle.preprocessing)
    assert cache.runner.exports == 1 and cache.runtime_used == "onnxruntime"
    assert _exported() == [path] and frozen_runtime.open_session(path) is not None
    torch.testing.assert_close(features, reference, rtol=0, atol=1e-4)


def test_a_file_that_disagrees_with_pytorch_is_deleted_and_pytorch_used(report, no_break_even):
    bundle, other = _model(), _model()
    with torch.no_grad():
        other.model.conv_stem.weight.mul_(-1.0)       # a different network written under this one's name
    cache = FeatureCache(bundle.model, cache_dir() / "features")
    path = frozen_runtime.onnx_path(cache.runner.folder, cache.stage, cache.fingerprint, SIZE)
    frozen_runtime.export_frozen(FeatureCache(other.model)._frozen_module().eval(), SIZE, path)
    features = _pass(cache, report, bundle.preprocessing)
    assert cache.runtime_used == "pytorch" and "differed from PyTorch's" in cache.runtime_note
    assert not path.exists() and cache.runner.exports == 0
    reference = _pass(FeatureCache(bundle.model, cache_dir() / "torch", frozen_runtime="pytorch"), report,
                      bundle.preprocessing)
    torch.testing.assert_close(features, reference, rtol=0, atol=1e-5)    # batches split apart differently


def test_pytorch_setting_never_exports(report, no_break_even):
    bundle = _model()
    cache = FeatureCache(bundle.model, frozen_runtime="pytorch")
    _pass(cache, report, bundle.preprocessing)
    assert cache.runtime_used == "pytorch" and cache.runner._session is None and not _exported()


def test_below_the_break_even_pytorch_runs_the_pass(report):
    bundle = _model()
    cache = FeatureCache(bundle.model)
    _pass(cache, report, bundle.preprocessing)
    assert cache.runtime_used == "pytorch" and not _exported()
    assert f"below the break-even of {frozen_runtime.break_even(SIZE)}" in cache.runtime_note
    cache = FeatureCache(bundle.model, cache_dir() / "other")
    cache.planned_images = frozen_runtime.break_even(SIZE)       # the whole fit pays for the export
    _pass(cache, report, bundle.preprocessing)
    assert cache.runtime_used == "onnxruntime"


def test_break_even_scales_with_pixels():
    assert frozen_runtime.break_even(frozen_runtime.BREAK_EVEN_SIZE) == frozen_runtime.BREAK_EVEN_IMAGES
    assert frozen_runtime.break_even(112) == 4 * frozen_runtime.BREAK_EVEN_IMAGES
    with pytest.raises(ValueError, match="frozen_runtime"):
        frozen_runtime.FrozenRunner("fast")


def test_a_cache_folder_that_cannot_be_written_leaves_the_pass_to_pytorch(report, no_break_even):
    bundle = _model()
    (cache_dir() / "frozen-onnx").parent.mkdir(parents=True, exist_ok=True)
    (cache_dir() / "frozen-onnx").write_text("a file where the folder should be")
    cache = FeatureCache(bundle.model, cache_dir() / "features")
    _pass(cache, report, bundle.preprocessing)
    assert cache.runtime_used == "pytorch" and "the export to ONNX Runtime failed" in cache.runtime_note
