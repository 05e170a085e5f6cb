"""Devices: which one `auto` picks, refusing one that is not there, mixed precision per device, halving the
batch after running out of GPU memory, and a real fit on the CPU that records its device.

This machine may have no GPU: the CUDA branches are tested through the capability arguments the pure
functions take, and the asserts that need a missing device skip where one is present."""
import json

import pytest
import torch
from conftest import write_colour_dataset

from engine.core.device import (AMP_OFF, AmpPolicy, BatchSizeBackoff, DeviceUnavailable, OutOfMemory,
                                amp_policy, describe_device, device_choices, resolve_device, with_oom_retry)
from engine.data.scan import scan_dataset
from engine.models.checkpoint import load_checkpoint
from engine.training.config import TrainConfig
from engine.training.trainer import Trainer

HAS_CUDA = torch.cuda.is_available()
HAS_MPS = torch.backends.mps.is_available()
no_cuda = pytest.mark.skipif(HAS_CUDA, reason="a CUDA GPU is present: it cannot be refused")
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU here (bench/gpu_check_device.sh runs these on one)")


# -- resolve_device -------------------------------------------------------------------------------------
def test_auto_picks_cuda_then_mps_then_cpu():
    assert resolve_device("auto", cuda_devices=2, has_mps=True) == torch.device("cuda", 0)
    assert resolve_device("auto", cuda_devices=0, has_mps=True) == torch.device("mps")
    assert resolve_device("auto", cuda_devices=0, has_mps=False) == torch.device("cpu")


@pytest.mark.skipif(HAS_CUDA or HAS_MPS, reason="a GPU is present")
def test_auto_is_the_cpu_on_this_machine():
    assert resolve_device() == torch.device("cpu")
    assert resolve_device("auto").type == "cpu"


def test_cpu_is_always_there_and_names_are_checked():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    with pytest.raises(ValueError, match="auto, cpu, cuda, cuda:N or mps"):
        resolve_device("gpu")


@no_cuda
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_missing_cuda_is_refused_with_one_line(name):
    with pytest.raises(DeviceUnavailable) as caught:
        resolve_device(name)
    message = str(caught.value)
    assert message == (f"CUDA was asked for (--device {name}) but torch sees no CUDA GPU on this machine; "
                       "use --device cpu or auto")
    assert isinstance(caught.value, ValueError) and "\n" not in message


@pytest.mark.skipif(HAS_MPS, reason="MPS is present")
def test_missing_mps_is_refused():
    with pytest.raises(DeviceUnavailable, match=r"MPS was asked for \(--device mps\)"):
        resolve_device("mps")


def test_cuda_index_beyond_the_count_is_refused():
    assert resolve_device("cuda:1", cuda_devices=2, has_mps=False) == torch.device("cuda", 1)
    with pytest.raises(DeviceUnavailable, match=r"--device cuda:3\) but torch sees 2 CUDA GPUs \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:3", cuda_devices=2, has_mps=False)
    with pytest.raises(DeviceUnavailable, match="sees 1 CUDA GPU "):
        resolve_device("cuda:1", cuda_devices=1, has_mps=False)


def test_device_choices_offer_only_what_exists():
    assert device_choices([], has_mps=False) == [("auto", "Automatic (CPU)"), ("cpu", "CPU")]
    assert device_choices(["NVIDIA H200", "NVIDIA H200"], has_mps=False) == [
        ("auto", "Automatic (CUDA:0)"), ("cpu", "CPU"), ("cuda:0", "GPU 0: NVIDIA H200"),
        ("cuda:1", "GPU 1: NVIDIA H200")]
    assert device_choices([], has_mps=True)[-1] == ("mps", "Apple GPU (MPS)")


def test_describe_device():
    assert describe_device(torch.device("cpu"), threads=2) == "CPU (2 threads)"
    assert describe_device(torch.device("cpu")) == f"CPU ({torch.get_num_threads()} threads)"
    assert describe_device(torch.device("cuda", 0), gpu_name="NVIDIA H200",
                           gpu_memory_bytes=139 * 2**30) == "CUDA: NVIDIA H200 (139 GiB)"
    assert describe_device(torch.device("mps")) == "Apple MPS"


# -- mixed precision ------------------------------------------------------------------------------------
def test_amp_policy_per_device():
    assert amp_policy(torch.device("cpu")) == AMP_OFF == AmpPolicy(False, None, False)
    assert amp_policy(torch.device("mps")) == AMP_OFF
    assert amp_policy(torch.device("cuda", 0), bf16_supported=True) == AmpPolicy(True, torch.bfloat16, False)
    assert amp_policy(torch.device("cuda", 0), bf16_supported=False) == AmpPolicy(True, torch.float16, True)


def test_amp_off_on_the_cpu_computes_in_float32():
    layer = torch.nn.Linear(4, 3)
    with amp_policy(torch.device("cpu")).autocast(torch.device("cpu")):
        out = layer(torch.randn(2, 4))
    assert out.dtype == torch.float32


# -- out of GPU memory -----------------------------------------------------------------------------------
def step_that_fits(limit: int, calls: list[int]):
    """A real step: a matrix product of `batch_size` rows that raises torch.OutOfMemoryError above `limit`
    rows, as CUDA's allocator does when a batch does not fit."""
    def step(batch_size: int) -> torch.Tensor:
        calls.append(batch_size)
        if batch_size > limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {batch_size} MiB")
        return torch.ones(batch_size, 4) @ torch.ones(4, 2)
    return step


def test_oom_halves_the_batch_and_retries():
    calls, retries = [], []
    out = with_oom_retry(step_that_fits(10, calls), 64, on_retry=lambda old, new: retries.append((old, new)))
    assert calls == [64, 32, 16, 8]
    assert retries == [(64, 32), (32, 16), (16, 8)]
    assert out.shape == (8, 2) and float(out.sum()) == 8 * 2 * 4


def test_oom_gives_up_at_the_floor_with_a_clear_message():
    calls = []
    with pytest.raises(OutOfMemory, match="ran out of memory even at batch size 4: choose a smaller"):
        with_oom_retry(step_that_fits(2, calls), 32, floor=4, device_name="CUDA:0")
    assert calls == [32, 16, 8, 4]
    with pytest.raises(OutOfMemory, match="even at batch size 1"):
        with_oom_retry(step_that_fits(0, []), 5)


def test_backoff_never_goes_below_its_floor():
    backoff = BatchSizeBackoff(7, floor=3)
    assert backoff.next_after_oom() == 3
    with pytest.raises(OutOfMemory):
        backoff.next_after_oom()


def test_other_errors_are_not_retried():
    calls = []

    def step(batch_size):
        calls.append(batch_size)
        raise RuntimeError("a real bug")
    with pytest.raises(RuntimeError, match="a real bug"):
        with_oom_retry(step, 16)
    assert calls == [16]


# -- a real fit ------------------------------------------------------------------------------------------
def test_config_device_is_validated_and_old_configs_load():
    assert TrainConfig().device == "auto"
    for name in ("auto", "cpu", "cuda", "cuda:1", "mps"):
        TrainConfig(device=name).validate()
    with pytest.raises(ValueError, match="device must be"):
        TrainConfig(device="gpu").validate()
    old = TrainConfig().to_dict()
    del old["device"]
    assert TrainConfig.from_dict(old).device == "auto"


def test_fit_on_the_cpu_records_the_device_and_its_checkpoint_loads(tmp_path):
    write_colour_dataset(tmp_path / "data", per_class=6)
    report = scan_dataset(tmp_path / "data", seed=0)
    run = tmp_path / "run"
    result = Trainer(report, TrainConfig(image_size=64, batch_size=8, epochs=1, device="cpu"), run).fit()
    assert result.status == "completed"
    config = json.loads((run / "config.json").read_text())
    assert config["device"] == "cpu" and config["device_used"] == "cpu"
    model, checkpoint = load_checkpoint(run / "model.safetensors")
    assert all(t.device.type == "cpu" for t in model.state_dict().values())
    assert checkpoint.meta["config"]["device"] == "cpu"


@needs_cuda
def test_a_gpu_trained_checkpoint_predicts_and_scores_unknowns_on_the_gpu_as_on_the_cpu(tmp_path):
    """The checkpoint's unknown score (its tensors, not only the network's) runs where the model runs:
    a head-only fit on CUDA predicts on CUDA and on the CPU alike, probabilities and unknown scores."""
    from PIL import Image

    from engine.outputs.predict import TorchClassifier
    write_colour_dataset(tmp_path / "data", per_class=8)
    report = scan_dataset(tmp_path / "data", seed=0)
    result = Trainer(report, TrainConfig(image_size=64, batch_size=8, epochs=2, device="cuda"), tmp_path / "run").fit()
    assert result.status == "completed"
    images = [Image.open(s.path).convert("RGB") for s in report.samples[:8]]
    on_gpu = TorchClassifier(result.checkpoint, "cuda").scored(images)
    on_cpu = TorchClassifier(result.checkpoint, "cpu").scored(images)
    assert on_gpu[1] is not None and on_cpu[1] is not None          # the run has an unknown score
    assert (on_gpu[0].argmax(1) == on_cpu[0].argmax(1)).all()
    assert abs(on_gpu[1] - on_cpu[1]).max() <= 1e-2 * max(1.0, abs(on_cpu[1]).max())


@needs_cuda
def test_the_deep_check_runs_its_frozen_pass_on_the_gpu(tmp_path):
    from engine.audit.deep import inspect_deep
    write_colour_dataset(tmp_path / "data", per_class=8)
    report = scan_dataset(tmp_path / "data", seed=0)
    on_gpu = inspect_deep(report, seed=0, device=torch.device("cuda"))
    on_cpu = inspect_deep(report, seed=0)
    assert on_gpu.samples == on_cpu.samples == len(report.samples)
    assert {i.path for i in on_gpu.label_issues} == {i.path for i in on_cpu.label_issues}


@no_cuda
def test_trainer_refuses_a_missing_gpu_before_any_work(tmp_path):
    write_colour_dataset(tmp_path / "data", per_class=3)
    report = scan_dataset(tmp_path / "data", seed=0)
    with pytest.raises(DeviceUnavailable):
        Trainer(report, TrainConfig(image_size=64, device="cuda"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


@no_cuda
@pytest.mark.parametrize("command", [["train", "{data}", "--out", "{out}"], ["assess", "{data}"],
                                     ["inspect", "{data}", "--deep"]])
def test_cli_device_cuda_exits_2_with_one_line(colour_dataset, tmp_path, command):
    from test_cli import run_cli
    args = [a.format(data=colour_dataset, out=tmp_path / "run") for a in command]
    done = run_cli(*args, "--device", "cuda")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines == [("error: CUDA was asked for (--device cuda) but torch sees no CUDA GPU on this machine; "
                      "use --device cpu or auto")]
    assert not (tmp_path / "run").exists()


# -- the window ------------------------------------------------------------------------------------------
def test_the_window_offers_only_this_machines_devices_and_refuses_others(qtbot, window):
    form = window.train_panel.settings
    offered = [form.device.itemData(i) for i in range(form.device.count())]
    assert offered == [value for value, _ in device_choices()]
    assert offered[:2] == ["auto", "cpu"] and form.values()["device"] == "auto"
    form.set_values(device="cpu")
    assert window.training_config().device == "cpu"
    if not HAS_CUDA:
        with pytest.raises(ValueError, match="not offered"):
            form.set_values(device="cuda:0")


def test_the_status_bar_says_where_a_run_trains(qtbot, window):
    window.training.on_fit_started({"params_total": 10, "params_trainable": 2, "device": "cpu",
                                    "device_label": describe_device(torch.device("cpu"))})
    assert window.statusBar().currentMessage() == f"Training on CPU ({torch.get_num_threads()} threads)"
    window.training.withdraw_device_message()
    assert window.statusBar().currentMessage() == ""


class FitsUpTo(torch.nn.Module):
    """A real linear layer that raises torch.OutOfMemoryError for batches above `limit` rows, as a GPU does
    when a batch does not fit."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit, self.sizes = limit, []
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x):
        self.sizes.append(len(x))
        if len(x) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.linear(x)


def test_trainer_step_halves_into_micro_batches_with_the_same_update(tmp_path):
    write_colour_dataset(tmp_path / "data", per_class=3)
    report = scan_dataset(tmp_path / "data", seed=0)
    trainer = Trainer(report, TrainConfig(image_size=64, batch_size=16, device="cpu", grad_clip=0),
                      tmp_path / "run")
    inputs, targets = torch.randn(16, 4), torch.randint(0, 3, (16,))

    def one_step(net):
        trainer.model = net
        trainer._use_device()
        trainer.criterion = torch.nn.CrossEntropyLoss()
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
        outputs, loss = trainer._step_within_memory(net, inputs, targets, optimizer, list(net.parameters()))
        return outputs, float(loss.detach()), net.linear.weight.detach().clone()

    torch.manual_seed(0)
    whole = FitsUpTo(16)
    torch.manual_seed(0)
    halved = FitsUpTo(5)
    expected = one_step(whole)
    outputs, loss, weight = one_step(halved)
    assert whole.sizes == [16]
    assert halved.sizes == [16, 8, 4, 4, 4, 4]           # 16 and 8 ran out of memory; 4 micro-batches of 4
    assert trainer._micro_batch == 4 and "micro-batches of 4 images" in trainer.path_notes[-1]
    assert torch.allclose(outputs, expected[0], atol=1e-6) and abs(loss - expected[1]) < 1e-6
    assert torch.allclose(weight, expected[2], atol=1e-6), "accumulated micro-batches make the same step"

    with pytest.raises(OutOfMemory, match="even at batch size 1"):
        one_step(FitsUpTo(0))


def test_cli_models_names_the_auto_device_and_bad_names_exit_2(colour_dataset, tmp_path):
    from test_cli import run_cli
    done = run_cli("models")
    assert done.returncode == 0
    expected = describe_device(resolve_device("auto")).split(" (")[0]
    assert f"device: --device auto runs on {expected}" in done.stdout
    done = run_cli("train", colour_dataset, "--out", tmp_path / "run", "--device", "gpu")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: device must be auto, cpu, cuda, cuda:N or mps, not 'gpu'"]


@no_cuda
def test_cli_predict_refuses_a_missing_gpu(tmp_path):
    from test_cli import run_cli
    done = run_cli("predict", tmp_path / "no-run", tmp_path, "--device", "cuda:1")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "CUDA was asked for (--device cuda:1)" in done.stderr
