"""Verified ONNX export: two architectures trained for an epoch on the demo dataset, parity and metadata
checked with onnxruntime on real images, and a broken export that must leave nothing behind."""
import atexit
import functools
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from engine.data.images import load_image
from engine.data.transforms import eval_transform
from engine.models.catalog import build_architecture
from engine.models.checkpoint import load_checkpoint
from engine.outputs.export import (ExportError, accepts_other_sizes, compare_logits, export_run, export_weights,
                                   read_metadata)
from engine.outputs.predict import ModelFileError

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "resources" / "demo" / "fashion-mnist"
_SCRATCH = Path(tempfile.mkdtemp(prefix="transferlab-export-tests-"))
atexit.register(shutil.rmtree, _SCRATCH, ignore_errors=True)


@functools.lru_cache(maxsize=None)
def trained_run(backbone: str) -> Path:
    """A run trained for one epoch at 64 px on the demo dataset, shared by this module and test_predict."""
    from engine.data.scan import scan_dataset
    from engine.training.config import TrainConfig
    from engine.training.trainer import Trainer
    config = TrainConfig(backbone=backbone, weights="random" if backbone == "resnet18" else "pretrained",
                         image_size=64, epochs=1, lr=0.01)
    run = _SCRATCH / f"run-{backbone}"
    Trainer(scan_dataset(DEMO), config, run).fit()
    return run


@functools.lru_cache(maxsize=None)
def exported(backbone: str):
    """The default export (exporter='auto') of `trained_run(backbone)`."""
    return export_run(trained_run(backbone), _SCRATCH / f"{backbone}.onnx")


def val_paths(run: Path, limit: int = 12) -> list[str]:
    rows = json.loads((run / "predictions.json").read_text())["val"]
    return [row["path"] for row in rows[::max(1, len(rows) // limit)]][:limit]


@pytest.mark.parametrize("backbone", [pytest.param("efficientnet_lite0", marks=pytest.mark.slow), "resnet18"])
def test_export_matches_pytorch_on_real_images(backbone):
    result = exported(backbone)
    assert result.exporter == "dynamo" and result.warnings == []
    assert result.max_abs_diff <= 1e-4 and result.top1_agreement == 1.0 and result.n_samples == 32
    assert result.max_input_diff == 0.0
    assert sorted(p.name for p in Path(result.path).parent.glob(f"{backbone}*")) == \
        [f"{backbone}.json", f"{backbone}.onnx"]            # one self-contained file, no .onnx.data

    model, checkpoint = load_checkpoint(trained_run(backbone) / "model.safetensors")
    session = ort.InferenceSession(result.path, providers=["CPUExecutionProvider"])
    (inp,), outputs = session.get_inputs(), session.get_outputs()
    assert inp.name == "input" and [out.name for out in outputs] == ["logits", "probabilities", "ood_score"]
    assert isinstance(inp.shape[0], str) and inp.shape[1:] == [3, 64, 64]

    images = [load_image(p) for p in val_paths(trained_run(backbone), 5)]
    batch = torch.stack([eval_transform(checkpoint.preprocessing)(im) for im in images])
    with torch.inference_mode():
        reference = model(batch).numpy() / checkpoint.meta["trust"]["temperature"]    # calibrated logits
    for rows in (slice(0, 1), slice(0, 5)):                # the batch axis is dynamic
        got = session.run(None, {"input": batch[rows].numpy()})[0]
        np.testing.assert_allclose(got, reference[rows], atol=1e-4)


@pytest.mark.parametrize("backbone", [pytest.param("efficientnet_lite0", marks=pytest.mark.slow), "resnet18"])
def test_metadata_lets_a_user_run_the_file_alone(backbone):
    result = exported(backbone)
    meta = {k: json.loads(v) for k, v in ort.InferenceSession(result.path).get_modelmeta()
            .custom_metadata_map.items()}
    _, checkpoint = load_checkpoint(trained_run(backbone) / "model.safetensors")
    metrics = json.loads((trained_run(backbone) / "metrics.json").read_text())
    assert meta["classes"] == checkpoint.classes == sorted(p.name for p in DEMO.iterdir())
    pre = checkpoint.preprocessing
    assert {k: meta["preprocessing"][k] for k in pre.to_dict()} == json.loads(json.dumps(pre.to_dict()))
    assert meta["preprocessing"]["resize_size"] == pre.resize_size
    assert meta["backbone"] == backbone and meta["trained"] == checkpoint.meta["created"]
    assert meta["metrics"]["test_accuracy"] == metrics["test_accuracy"]
    assert meta["verification"]["images"] == 32 and meta["verification"]["top1_agreement"] == 1.0
    assert meta["exporter"] == "dynamo" and meta["opset"] == 18
    assert json.loads(Path(result.sidecar).read_text()) == meta == read_metadata(result.path)


def test_legacy_exporter_and_dynamic_size(tmp_path):
    result = export_run(trained_run("resnet18"), tmp_path / "m.onnx", exporter="legacy", dynamic_size=True)
    assert result.exporter == "legacy" and result.dynamic_size and result.max_abs_diff <= 1e-4
    assert result.n_samples == 64                          # 32 images at two input sizes
    session = ort.InferenceSession(result.path)
    assert session.run(None, {"input": np.zeros((2, 3, 80, 96), np.float32)})[0].shape == (2, 10)


def test_architectures_with_a_fixed_input_size_are_detected():
    from engine.data.preprocessing import Preprocessing
    assert accepts_other_sizes(build_architecture("resnet18", 3), Preprocessing(64))
    assert not accepts_other_sizes(build_architecture("vit_tiny_patch16_224", 3), Preprocessing(224))


def test_failed_verification_leaves_no_file(tmp_path, monkeypatch):
    """An exporter that produces a subtly different model (one shifted logit) must be rejected."""
    import engine.outputs.export as export
    real = export._run_exporter

    def broken_exporter(name, model, size, path, dynamic_size):
        class Shifted(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = model
                self.register_buffer("shift", torch.tensor([0.0, 5.0] + [0.0] * 8))

            def forward(self, x):
                logits, probabilities, score = self.inner(x)
                return logits + self.shift, probabilities, score
        real(name, Shifted().eval(), size, path, dynamic_size)

    monkeypatch.setattr(export, "_run_exporter", broken_exporter)
    with pytest.raises(ExportError, match="failed verification.*exceeds the tolerance"):
        export_run(trained_run("resnet18"), tmp_path / "m.onnx", exporter="legacy")
    assert list(tmp_path.iterdir()) == []


def test_compare_logits_allows_only_real_ties():
    reference = np.array([[1.0, 2.0, 0.0], [3.0, 3.0, 0.0]], np.float32)
    tied = reference + np.array([[0, 0, 0], [-1e-6, 1e-6, 0]], np.float32)
    assert compare_logits(reference, reference, 1e-3).problem is None
    verdict = compare_logits(reference, tied, 1e-3)
    assert verdict.problem is None and verdict.ties == 1 and verdict.top1_agreement == 0.5
    assert "exceeds" in compare_logits(reference, reference + 0.01, 1e-3).problem
    assert "exceeds" in compare_logits(reference, reference * np.nan, 1e-3).problem
    assert "shape" in compare_logits(reference, reference[:, :2], 1e-3).problem


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(ModelFileError, match="not a run folder"):
        export_run(tmp_path, tmp_path / "m.onnx")
    with pytest.raises(ExportError, match="must end in .onnx"):
        export_run(trained_run("resnet18"), tmp_path / "m.pt")
    with pytest.raises(ExportError, match="no usable images"):
        export_run(trained_run("resnet18"), tmp_path / "m.onnx", verify_images=[tmp_path])


def test_plain_safetensors_weights_load_in_timm(tmp_path):
    import timm
    from safetensors import safe_open
    from safetensors.torch import load_file
    out = export_weights(trained_run("resnet18"), tmp_path / "w.safetensors")
    with safe_open(out, "pt") as f:
        meta = f.metadata()
    model = timm.create_model(meta["arch"], num_classes=int(meta["num_classes"]))
    model.load_state_dict(load_file(out))
    assert json.loads(meta["classes"])[0] == "ankle-boot" and json.loads(meta["preprocessing"])["input_size"] == 64


def run_cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_cli_export_and_its_bad_input(tmp_path):
    done = run_cli("export", trained_run("resnet18"), "--onnx", tmp_path / "m.onnx", "--exporter", "legacy")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["top1_agreement"] == 1.0 and Path(summary["path"]).is_file()

    done = run_cli("export", tmp_path, "--onnx", tmp_path / "x.onnx")
    assert done.returncode == 2 and "not a run folder" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
