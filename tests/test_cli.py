"""Headless CLI: the documented commands, their outputs and exit statuses."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_version():
    done = run_cli("--version")
    assert done.returncode == 0 and "TransferLab" in done.stdout


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["train", "--help"], ["export", "--help"]])
def test_version_and_help_do_not_import_torch(args):
    """Building the parser (defaults and choices from TrainConfig) must stay instant: no torch, no timm."""
    code = ("import sys, main\n"
            "try:\n"
            f"    main.main({args!r})\n"
            "except SystemExit:\n"
            "    pass\n"
            "print(sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout + done.stderr


def test_train_options_follow_train_config():
    from engine.cli.common import TRAIN_OPTIONS, config_from_args
    from engine.cli.main import build_parser
    from engine.training.config import TrainConfig
    args = build_parser().parse_args(["train", "data", "--out", "run"])
    config = config_from_args(args)
    assert all(getattr(config, name) == getattr(TrainConfig(), name) for name, _ in TRAIN_OPTIONS)
    args = build_parser().parse_args(["train", "data", "--out", "run", "--schedule", "onecycle", "--lr", "0.02",
                                      "--balance", "sampler", "--batch-size", "8"])
    config = config_from_args(args)
    assert (config.schedule, config.lr, config.balance, config.batch_size) == ("onecycle", 0.02, "sampler", 8)


def test_models_lists_offline_weights():
    done = run_cli("models", "--json")
    rows = {r["name"]: r for r in json.loads(done.stdout)}
    assert rows["efficientnet_lite0"]["weights_available"] is True
    assert rows["all-minilm-l6-v2"]["available"] is True and rows["all-minilm-l6-v2"]["modality"] == "text"


def test_inspect_prints_the_report(colour_dataset):
    (colour_dataset / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    done = run_cli("inspect", colour_dataset)
    assert done.returncode == 0
    assert "red" in done.stdout and "broken.png" in done.stdout


def test_train_writes_checkpoint_and_metrics(colour_dataset, tmp_path):
    out = tmp_path / "run"
    done = run_cli("train", colour_dataset, "--out", out, "--epochs", 3, "--image-size", 64,
                   "--batch-size", 8, "--lr", "0.01")
    assert done.returncode == 0, done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["classes"] == ["blue", "green", "red"]
    assert metrics["val_accuracy"] == 1.0
    assert metrics["test_accuracy"] is not None and "per_class" in metrics and "confusion_matrix" in metrics
    assert (out / "model.safetensors").exists()
    assert json.loads(done.stdout.strip().splitlines()[-1])["status"] == "completed"


def test_train_on_split_folders_without_test_reports_null_test_accuracy(tmp_path):
    from conftest import write_colour_dataset
    write_colour_dataset(tmp_path / "data" / "train", per_class=6)
    write_colour_dataset(tmp_path / "data" / "val", per_class=2, seed=1)
    done = run_cli("train", tmp_path / "data", "--out", tmp_path / "run", "--epochs", 1, "--image-size", 64)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test_accuracy"] is None


@pytest.mark.parametrize("args, message", [
    (["inspect", "/no/such/folder"], "does not exist"),
    (["train", "/no/such/folder", "--out", "x"], "does not exist"),
    (["train", "{data}", "--out", "{out}", "--model", "nope"], "unknown backbone"),
    (["train", "{data}", "--out", "{out}", "--freeze", "bogus"], "--freeze"),
    (["train", "{data}", "--out", "{out}", "--epochs", "0"], "epochs"),
])
def test_bad_input_exits_2_with_one_line(colour_dataset, tmp_path, args, message):
    args = [a.format(data=colour_dataset, out=tmp_path / "run") for a in args]
    done = run_cli(*args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_one_class_dataset_is_bad_input(tmp_path):
    from conftest import write_colour_dataset
    write_colour_dataset(tmp_path / "one", colours={"red": (200, 0, 0)})
    done = run_cli("train", tmp_path / "one", "--out", tmp_path / "run")
    assert done.returncode == 2 and "class" in done.stderr and "Traceback" not in done.stderr


def test_cached_views_reach_the_config_and_zero_is_refused(tmp_path):
    from engine.cli.common import config_from_args
    from engine.cli.main import build_parser
    args = build_parser().parse_args(["train", str(tmp_path), "--out", str(tmp_path / "run"), "--cached-views", "3"])
    assert config_from_args(args).cached_views == 3
    args = build_parser().parse_args(["train", str(tmp_path), "--out", str(tmp_path / "run"), "--cached-views", "0"])
    with pytest.raises(ValueError, match="cached_views"):
        config_from_args(args)
