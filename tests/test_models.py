"""Backbones: real offline ImageNet weights classify real photos; heads are replaced; weight files are
read safely (no unpickling) and matched to the architecture."""
import pickle

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from engine.data.transforms import eval_transform
from engine.models.catalog import CATALOG, ModelError, create_model, get_spec, list_backbones, weights_status

skimage_data = pytest.importorskip("skimage.data")


OFFLINE_BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


@pytest.fixture(scope="module", params=OFFLINE_BACKBONES)
def imagenet_model(request):
    """Each backbone whose ImageNet weights are a dependency, built from those weights."""
    return create_model(request.param)


@pytest.fixture(scope="module")
def imagenet_lite0():
    return create_model("efficientnet_lite0")


def _top5(bundle, photo) -> list[tuple[str, float]]:
    from timm.data import ImageNetInfo
    info = ImageNetInfo()
    tensor = eval_transform(bundle.preprocessing)(Image.fromarray(photo).convert("RGB"))[None]
    with torch.inference_mode():
        probs = bundle.model(tensor).softmax(-1)[0]
    scores, indices = probs.topk(5)
    return [(info.index_to_description(int(i)), float(s)) for s, i in zip(scores, indices)]


def test_offline_weights_classify_a_cat(imagenet_model):
    top1, score = _top5(imagenet_model, skimage_data.chelsea())[0]
    assert top1 in ("tiger cat", "Egyptian cat", "tabby, tabby cat")
    assert score > 0.3


def test_offline_weights_classify_an_espresso(imagenet_model):
    top1, score = _top5(imagenet_model, skimage_data.coffee())[0]
    assert top1 == "espresso"
    assert score > 0.5          # measured: Lite0 0.95, Lite1 0.54, Lite2 0.89


def test_espresso_score_of_lite0_matches_its_reference(imagenet_lite0):
    """Lite0's weights reproduce the published model (timm's tf_efficientnet_lite0) to the score."""
    assert _top5(imagenet_lite0, skimage_data.coffee())[0][1] == pytest.approx(0.95, abs=0.03)


def test_preprocessing_comes_from_the_pretrained_config(imagenet_lite0):
    pre = imagenet_lite0.preprocessing
    assert (pre.input_size, pre.mean, pre.std, pre.interpolation, pre.crop_pct) == \
        (224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic", 0.875)
    assert create_model("efficientnet_lite0", 3, input_size=160).preprocessing.input_size == 160


def test_head_is_replaced_for_the_users_classes():
    bundle = create_model("efficientnet_lite0", num_classes=3)
    assert bundle.model.get_classifier().out_features == 3
    assert bundle.model(torch.zeros(1, 3, 64, 64)).shape == (1, 3)


def test_catalog_reports_offline_availability_honestly():
    rows = {r["name"]: r for r in list_backbones()}
    assert all(rows[name]["weights_available"] is True for name in OFFLINE_BACKBONES)
    for spec in CATALOG:
        assert rows[spec.name]["weights_available"] == weights_status(spec).available


def test_missing_pretrained_weights_is_an_error_not_random_init(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch"))
    monkeypatch.setattr("engine.models.catalog._hf_cache_path", lambda hub_id: None)
    with pytest.raises(ModelError, match="no offline ImageNet weights for convnext_atto"):
        create_model("convnext_atto", 3)
    assert create_model("convnext_atto", 3, weights="random").weights == "random"


def test_unknown_backbone_names_the_choices():
    with pytest.raises(ModelError, match="efficientnet_lite0"):
        get_spec("no_such_net")


def test_local_safetensors_weights_load_by_name(tmp_path):
    source = create_model("resnet18", 5, weights="random").model
    path = tmp_path / "resnet.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    loaded = create_model("resnet18", 5, weights=str(path)).model
    assert torch.equal(loaded.layer1[0].conv1.weight, source.layer1[0].conv1.weight)


def test_local_pth_with_other_class_count_keeps_backbone_and_new_head(tmp_path):
    source = create_model("resnet18", 7, weights="random").model
    path = tmp_path / "resnet.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    loaded = create_model("resnet18", 3, weights=str(path)).model
    assert torch.equal(loaded.conv1.weight, source.conv1.weight)
    assert loaded.fc.out_features == 3


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "lite0.safetensors"
    state = create_model("efficientnet_lite0", weights="random").model.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(ModelError, match="do not fit"):
        create_model("resnet18", 3, weights=str(path))


class _Exploit:
    def __reduce__(self):
        return (exec, ("open('PWNED_MARKER','w').write('x')",))


def test_a_pickled_payload_is_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"weight": _Exploit()}))
    with pytest.raises(ModelError, match="cannot read weights"):
        create_model("resnet18", 3, weights=str(path))
    assert not (tmp_path / "PWNED_MARKER").exists()


@pytest.mark.parametrize("content", [b"", b"not a model at all", b"\x00" * 100])
def test_garbage_weight_files_give_a_clear_error(tmp_path, content):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(content)
    with pytest.raises(ModelError, match="cannot read weights"):
        create_model("resnet18", 3, weights=str(path))
