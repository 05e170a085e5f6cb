"""Layer tree and freezing: what the tree says is exactly what trains."""
import pytest
import torch

from engine.models.catalog import create_model
from engine.models.layers import LayerTree, block_groups, frozen_batchnorm_to_eval
from engine.models.presets import parse_freeze


@pytest.fixture
def lite0():
    return create_model("efficientnet_lite0", 4, weights="random").model


def test_tree_mirrors_module_names_types_and_counts(lite0):
    tree = LayerTree(lite0)
    assert [c.name for c in tree.root.children] == ["conv_stem", "bn1", "blocks", "conv_head", "bn2", "classifier"]
    node = tree.node("blocks.6.0")
    assert node.type_name == "InvertedResidual"
    assert node.parent.name == "blocks.6"
    assert tree.root.num_params == sum(p.numel() for p in lite0.parameters())
    assert tree.node("classifier").num_params == 1280 * 4 + 4


def test_freezing_a_subtree_sets_requires_grad_and_tri_state(lite0):
    tree = LayerTree(lite0)
    heard = []
    tree.listeners.append(heard.append)
    tree.set_trainable("blocks.3", False)
    assert all(not p.requires_grad for p in lite0.blocks[3].parameters())
    assert all(p.requires_grad for p in lite0.blocks[4].parameters())
    assert tree.node("blocks.3").trainable is False
    assert tree.node("blocks").trainable is None
    assert tree.root.trainable is None
    assert heard, "listeners hear about changes"
    total, trainable = tree.counts()
    assert trainable == total - sum(p.numel() for p in lite0.blocks[3].parameters())


def test_head_preset_trains_only_the_classifier(lite0):
    tree = LayerTree(lite0)
    tree.apply_preset("head")
    trainable = {n for n, p in lite0.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.weight", "classifier.bias"}


def test_last_n_blocks_uses_timm_grouping(lite0):
    tree = LayerTree(lite0)
    tree.apply_preset("last-n", 2)
    trainable = {n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("blocks") else "")
                 for n, p in lite0.named_parameters() if p.requires_grad}
    assert trainable == {"blocks.5", "blocks.6", "conv_head", "bn2", "classifier"}


def test_none_preset_trains_everything(lite0):
    tree = LayerTree(lite0)
    tree.apply_preset("head")
    tree.apply_preset("none")
    assert tree.root.trainable is True


def test_freeze_state_round_trips_through_parameter_names(lite0):
    tree = LayerTree(lite0)
    tree.set_trainable("blocks.1", False)
    tree.set_trainable("conv_stem", False)
    saved = tree.frozen_parameter_names()
    other = LayerTree(create_model("efficientnet_lite0", 4, weights="random").model)
    other.freeze_parameters(saved)
    assert [p.requires_grad for p in other.model.parameters()] == [p.requires_grad for p in lite0.parameters()]


def test_block_groups_cover_every_parameter_once(lite0):
    groups = block_groups(lite0)
    flat = [n for g in groups for n in g]
    assert sorted(flat) == sorted(n for n, _ in lite0.named_parameters())
    assert groups[-1] == ["classifier.weight", "classifier.bias"]


def test_frozen_batchnorm_keeps_running_statistics(lite0):
    tree = LayerTree(lite0)
    tree.apply_preset("head")
    lite0.train()
    assert frozen_batchnorm_to_eval(lite0) > 0
    before = lite0.bn1.running_mean.clone()
    lite0(torch.randn(2, 3, 64, 64) * 3 + 1)
    assert torch.equal(before, lite0.bn1.running_mean)


def test_trainable_batchnorm_still_updates(lite0):
    lite0.train()
    frozen_batchnorm_to_eval(lite0)
    before = lite0.bn1.running_mean.clone()
    lite0(torch.randn(2, 3, 64, 64) * 3 + 1)
    assert not torch.equal(before, lite0.bn1.running_mean)


@pytest.mark.parametrize("text, expected", [("head", ("head", 0)), ("none", ("none", 0)),
                                            ("all-but-last-3", ("last-n", 3))])
def test_parse_freeze(text, expected):
    assert parse_freeze(text) == expected


def test_parse_freeze_rejects_nonsense():
    with pytest.raises(ValueError, match="all-but-last-N"):
        parse_freeze("some")
