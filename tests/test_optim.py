"""The optimisation recipe on tiny real modules: learning-rate schedules, parameter groups, class weights."""
import numpy as np
import pytest
import torch
from torch import nn

from engine.training.config import TrainConfig
from engine.training.optim import class_weights, make_optimizer, make_schedule, param_groups

STEPS_PER_EPOCH, EPOCHS = 10, 5
TOTAL = STEPS_PER_EPOCH * EPOCHS


def tiny_model() -> nn.Sequential:
    """Three top-level children, so three depth groups: stem (0), norm (1), head (2)."""
    return nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 3))


def learning_rates(schedule: str, warmup_epochs: float = 1.0, lrs=(1.0,)) -> np.ndarray:
    """The rate of each parameter group at every optimizer step of a fit, shape (steps, groups)."""
    config = TrainConfig(schedule=schedule, warmup_epochs=warmup_epochs)
    groups = [{"params": [nn.Parameter(torch.zeros(2, 2))], "lr": lr} for lr in lrs]
    optimizer = make_optimizer(groups, config)
    scheduler = make_schedule(optimizer, config, STEPS_PER_EPOCH, EPOCHS)
    rates = []
    for _ in range(TOTAL):
        rates.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return np.array(rates)


def test_cosine_warms_up_linearly_to_the_peak_then_decays_to_zero():
    rates = learning_rates("cosine")[:, 0]
    warmup = STEPS_PER_EPOCH
    rises = np.diff(rates[:warmup + 1])
    assert np.all(rises > 0) and np.allclose(rises, rises[0]), "linear rise"
    assert int(np.argmax(rates)) == warmup and rates[warmup] == pytest.approx(1.0)
    assert np.all(np.diff(rates[warmup:]) <= 0), "only decays after the warm-up"
    assert rates[-1] < 0.01 and rates[TOTAL // 2 + warmup // 2] == pytest.approx(0.5, abs=0.05)


def test_constant_stays_at_the_peak_after_the_warm_up():
    rates = learning_rates("constant")[:, 0]
    assert np.all(np.diff(rates[:STEPS_PER_EPOCH + 1]) > 0)
    assert np.allclose(rates[STEPS_PER_EPOCH:], 1.0)
    assert np.allclose(learning_rates("constant", warmup_epochs=0)[:, 0], 1.0)


def test_onecycle_peaks_near_a_quarter_of_the_fit():
    rates = learning_rates("onecycle")[:, 0]
    assert abs(int(np.argmax(rates)) - 0.25 * TOTAL) <= 1
    assert rates.max() == pytest.approx(1.0, abs=0.01)
    assert rates[0] < 0.1 and rates[-1] < 0.01


@pytest.mark.parametrize("schedule", ["cosine", "constant", "onecycle"])
def test_schedules_keep_each_group_at_its_own_scale(schedule):
    rates = learning_rates(schedule, lrs=(1.0, 0.25))
    assert np.allclose(rates[:, 1], 0.25 * rates[:, 0])


def group_of_each_parameter(model: nn.Module, groups: list[dict]) -> dict[str, dict]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: group for group in groups for p in group["params"]}


def test_param_groups_scale_the_rate_by_depth_and_spare_1d_parameters_from_weight_decay():
    model = tiny_model()
    groups = param_groups(model, lr=0.1, layer_decay=0.5, weight_decay=0.01)
    owner = group_of_each_parameter(model, groups)
    assert sorted(owner) == sorted(n for n, _ in model.named_parameters()), "each parameter exactly once"
    assert sum(len(g["params"]) for g in groups) == len(owner)
    expected = {  # name: (lr_scale, weight_decay); the head (2) is depth 0
        "2.weight": (1.0, 0.01), "2.bias": (1.0, 0.0),
        "1.weight": (0.5, 0.0), "1.bias": (0.5, 0.0),
        "0.weight": (0.25, 0.01), "0.bias": (0.25, 0.0),
    }
    for name, (scale, decay) in expected.items():
        group = owner[name]
        assert (group["lr_scale"], group["weight_decay"]) == (scale, decay), name
        assert group["lr"] == pytest.approx(0.1 * scale), name


def test_param_groups_leave_out_frozen_parameters():
    model = tiny_model()
    for parameter in model[0].parameters():
        parameter.requires_grad = False
    owner = group_of_each_parameter(model, param_groups(model, lr=0.1, layer_decay=0.5, weight_decay=0.01))
    assert sorted(owner) == ["1.bias", "1.weight", "2.bias", "2.weight"]


def test_class_weights_are_inversely_proportional_to_counts():
    weights = class_weights([0, 0, 0, 0, 0, 0, 1, 1, 2], 4)
    counts = np.array([6, 2, 1])
    assert weights.dtype == torch.float32 and weights.shape == (4,)
    assert np.allclose(weights[:3].numpy() * counts, 9 / 4), "weight x count is the same for every class"
    assert weights[3] == 0, "a class without training images gets no weight"


def test_class_weights_of_a_balanced_set_are_one():
    assert torch.allclose(class_weights([0, 1, 2, 0, 1, 2], 3), torch.ones(3))
