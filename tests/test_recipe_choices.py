"""The recipe choices a search may pick, end to end on small real images: an MLP head, flip augmentation
on cached views, and test-time flip, through training, checkpoint, predict and verified ONNX export."""
import functools
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import write_colour_dataset
from PIL import Image
from safetensors.torch import save_file

from engine.data.images import load_image
from engine.data.scan import scan_dataset
from engine.data.transforms import eval_transform, train_transform
from engine.models.catalog import create_model
from engine.models.checkpoint import META_KEY, load_checkpoint
from engine.models.heads import MlpHead
from engine.models.layers import LayerTree, head_parameter_names
from engine.models.predictor import MirrorAveraged, predictor
from engine.outputs.export import export_run, read_metadata
from engine.outputs.predict import OnnxClassifier, TorchClassifier, load_classifier, predict_images
from engine.training.caches import (FeatureCache, feature_cache_applies, plan_cache, pooled_features, view_id,
                                    view_transform)
from engine.training.config import TrainConfig
from engine.training.trainer import Trainer
from test_export import _SCRATCH

SMALL = dict(backbone="resnet18", weights="random", image_size=64, batch_size=8, epochs=2, lr=1e-2)
RECIPE = dict(SMALL, head="mlp", augmentation="flip", tta="flip")
MLP_PARAMS = {"efficientnet_lite0": "classifier", "resnet18": "fc"}


@functools.lru_cache(maxsize=None)
def colours():
    return write_colour_dataset(_SCRATCH / "recipe-colours")


@functools.lru_cache(maxsize=None)
def trained(cache: str) -> Trainer:
    """One fit of RECIPE (head-only MLP, flip views, test-time flip), shared by the tests below."""
    trainer = Trainer(scan_dataset(colours(), seed=0), TrainConfig(**RECIPE, cache=cache),
                      _SCRATCH / f"recipe-run-{cache}")
    trainer.fit()
    return trainer


def eval_batch(paths, pre) -> torch.Tensor:
    return torch.stack([eval_transform(pre)(load_image(p)) for p in paths])


def asymmetric_image() -> Image.Image:
    """Red on the left, a blue ramp on the right: its mirror image is a different input."""
    pixels = np.zeros((64, 64, 3), np.uint8)
    pixels[:, :24, 0] = 230
    pixels[:, 24:, 2] = np.linspace(40, 255, 40, dtype=np.uint8)
    return Image.fromarray(pixels)


# -- the MLP head -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backbone", sorted(MLP_PARAMS))
def test_the_whole_mlp_is_the_head_and_only_it_trains_with_freeze_head(backbone):
    model = create_model(backbone, 3, weights="random", head="mlp").model
    assert isinstance(model.get_classifier(), MlpHead) and model.get_classifier().out_features == 3
    prefix = MLP_PARAMS[backbone]
    mlp = [f"{prefix}.{layer}.{kind}" for layer in ("hidden", "out") for kind in ("weight", "bias")]
    assert head_parameter_names(model) == mlp
    LayerTree(model).apply_preset("head")
    assert [n for n, p in model.named_parameters() if p.requires_grad] == mlp
    assert feature_cache_applies(model) and plan_cache(model).kind == "features"


def test_an_mlp_head_trained_on_cached_features_reloads_with_identical_logits():
    trainer = trained("auto")
    assert any("cached features" in note for note in trainer.path_notes)
    assert [n for n, p in trainer.model.named_parameters() if p.requires_grad] == \
        head_parameter_names(trainer.model)
    model, checkpoint = load_checkpoint(trainer.files.checkpoint)
    assert checkpoint.meta["head"] == "mlp" and checkpoint.meta["tta"] == "flip"
    assert isinstance(model.get_classifier(), MlpHead)
    images = eval_batch([s.path for s in trainer.val_samples], checkpoint.preprocessing)
    trainer.model.eval()
    model.to(memory_format=torch.channels_last)             # as the trainer holds it: the same kernels run
    with torch.inference_mode():
        assert torch.equal(model(images), trainer.model(images))


def test_a_checkpoint_without_a_head_key_has_a_linear_head(tmp_path):
    bundle = create_model("resnet18", 3, weights="random")
    meta = {"format": "transferlab-checkpoint/1", "backbone": "resnet18", "classes": ["a", "b", "c"],
            "preprocessing": bundle.preprocessing.to_dict()}                  # written before heads existed
    path = tmp_path / "old.safetensors"
    save_file({k: v.contiguous() for k, v in bundle.model.state_dict().items()}, str(path),
              metadata={META_KEY: json.dumps(meta)})
    model, _ = load_checkpoint(path)
    assert isinstance(model.fc, torch.nn.Linear) and predictor(model, meta) is model


# -- flip views -----------------------------------------------------------------------------------------------
def test_flip_augmentation_on_images_is_the_eval_transform_or_its_mirror():
    pre = create_model("resnet18", 3, weights="random", input_size=64).preprocessing
    image = asymmetric_image()
    plain, mirrored = view_transform(pre, "plain")(image), view_transform(pre, "mirrored")(image)
    assert torch.equal(mirrored, plain.flip(-1))
    torch.manual_seed(0)
    seen = [train_transform(pre, "flip")(image) for _ in range(8)]
    assert all(torch.equal(x, plain) or torch.equal(x, mirrored) for x in seen)
    assert any(torch.equal(x, plain) for x in seen) and any(torch.equal(x, mirrored) for x in seen)


def test_the_mirrored_cached_view_is_the_features_of_mirrored_images(tmp_path):
    bundle = create_model("resnet18", 3, weights="random", input_size=64)
    model, pre = bundle.model.eval(), bundle.preprocessing
    report = scan_dataset(colours(), seed=0)
    train = report.split("train")
    paths = [s.path for s in train]
    mirrored = FeatureCache(model, tmp_path).features(paths, [s.label for s in train], report.content_hash,
                                                      [view_transform(pre, "mirrored")], view_id(pre, "mirrored"), 0)
    expected = pooled_features(model, eval_batch(paths, pre).flip(3))
    torch.testing.assert_close(mirrored[0], expected, rtol=1e-4, atol=1e-4)
    assert view_id(pre, "plain") != view_id(pre, "mirrored")


def test_flip_trains_on_two_views_whose_cache_entries_every_fit_and_a_search_share(tmp_path):
    report = scan_dataset(colours(), seed=0)
    config = dict(SMALL, epochs=1)
    first = Trainer(report, TrainConfig(**config, augmentation="flip"), tmp_path / "a")
    first.fit()
    assert any("cached features (2 views" in note for note in first.path_notes)
    assert first.inputs.feature_cache.misses == 4                 # train plain + mirrored, val and test plain
    for augmentation in ("flip", "light", "none"):         # the plain view is one entry for every augmentation
        again = Trainer(report, TrainConfig(**config, augmentation=augmentation), tmp_path / augmentation)
        again.fit()
        assert again.inputs.feature_cache.misses == 0 and again.inputs.feature_cache.hits > 0, augmentation
    search = FeatureCache(first.model)                     # a new cache over the same frozen backbone
    train, pre = report.split("train"), first.bundle.preprocessing
    for view in ("plain", "mirrored"):                     # the call a recipe search makes, from disk
        search.features([s.path for s in train], [s.label for s in train], report.content_hash,
                        [view_transform(pre, view)], view_id(pre, view), seed=0)
    assert (search.hits, search.misses) == (2, 0)


# -- test-time flip -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cache", ["auto", "off"])
def test_the_trainer_evaluates_with_the_mean_of_image_and_mirror_logits(cache):
    trainer = trained(cache)
    assert any("cached features" in note for note in trainer.path_notes) == (cache == "auto")
    model, checkpoint = load_checkpoint(trainer.files.checkpoint)
    rows = json.loads(trainer.files.predictions.read_text())["val"]
    images = eval_batch([row["path"] for row in rows], checkpoint.preprocessing)
    labels = torch.tensor([row["true"] for row in rows])
    with torch.inference_mode():
        plain_logits, averaged_logits = model(images), (model(images) + model(images.flip(3))) / 2
    temperature = checkpoint.meta["trust"]["temperature"]         # the stored probabilities are calibrated
    plain, averaged = torch.softmax(plain_logits / temperature, 1), torch.softmax(averaged_logits / temperature, 1)
    predicted = averaged.argmax(1)
    assert [row["predicted"] for row in rows] == predicted.tolist()
    scores = averaged[torch.arange(len(rows)), predicted].numpy()
    np.testing.assert_allclose([row["score"] for row in rows], scores, atol=1e-4)
    assert (plain_logits - averaged_logits).abs().max() > 1e-2, "TTA changes scores"
    metrics = json.loads(trainer.files.metrics.read_text())
    assert metrics["val_accuracy"] == checkpoint.meta["val_accuracy"] == float((predicted == labels).float().mean())
    # the per-epoch validation that chose this checkpoint averaged the logits too
    tta_loss = float(torch.nn.functional.cross_entropy(averaged_logits, labels))
    assert checkpoint.meta["val_loss"] == pytest.approx(tta_loss, rel=1e-4)
    assert float(torch.nn.functional.cross_entropy(plain_logits, labels)) != pytest.approx(tta_loss, rel=1e-3)


def test_export_holds_the_whole_predictor_and_predict_needs_nothing_else(tmp_path):
    run = trained("auto").run_dir
    result = export_run(run, tmp_path / "m.onnx")
    assert result.max_abs_diff <= 1e-4 and result.top1_agreement == 1.0
    card = read_metadata(result.path)
    assert (card["head"], card["tta"]) == ("mlp", "flip")
    assert json.loads((tmp_path / "m.json").read_text())["tta"] == "flip"
    session = ort.InferenceSession(result.path, providers=["CPUExecutionProvider"])
    assert len(session.get_inputs()) == 1 and len(session.get_outputs()) == 3     # logits, probabilities, score

    images = sorted(colours().rglob("*.png"))[::4]
    onnx_report = predict_images(load_classifier(result.path), images)
    torch_report = predict_images(load_classifier(run), images)
    for a, b in zip(onnx_report.predictions, torch_report.predictions, strict=True):
        assert a.label == b.label and a.score == pytest.approx(b.score, abs=1e-4)

    image = asymmetric_image()
    exported = OnnxClassifier(result.path).logits([image])
    bare, checkpoint = load_checkpoint(run / "model.safetensors")
    temperature = checkpoint.meta["trust"]["temperature"]          # the exported logits are calibrated
    batch = TorchClassifier(run / "model.safetensors").inputs([image])
    with torch.inference_mode():
        without_tta = bare(batch).numpy() / temperature
        with_tta = MirrorAveraged(bare)(batch).numpy() / temperature
    assert np.abs(exported - without_tta).max() > 1e-2, "the export must not drop test-time flip"
    np.testing.assert_allclose(exported, with_tta, atol=1e-4)
