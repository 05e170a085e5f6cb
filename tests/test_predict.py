"""Prediction from a run, a checkpoint or an exported .onnx: identical preprocessing in the torch and the
numpy paths, identical top-1 on real images, the standalone example, and hostile model files."""
import csv
import importlib.util
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from engine.data.images import load_image
from engine.data.preprocessing import Preprocessing
from engine.data.transforms import eval_transform
from engine.models.checkpoint import CheckpointError
from engine.outputs.predict import (UNKNOWN, ModelFileError, OnnxClassifier, TorchClassifier, load_classifier,
                                    predict_images, preprocess_image, write_csv)
from test_export import DEMO, ROOT, exported, run_cli, trained_run, val_paths

EXAMPLE = ROOT / "examples" / "onnx_predict.py"


def load_example():
    spec = importlib.util.spec_from_file_location("onnx_predict", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def photos() -> list[Image.Image]:
    chelsea, coffee = Image.fromarray(skimage.data.chelsea()), Image.fromarray(skimage.data.coffee())
    return [chelsea, coffee, coffee.resize((301, 157)), chelsea.resize((9, 200)),
            load_image(DEMO / "bag" / "00023.png")]


@pytest.fixture
def tricky_images(tmp_path) -> list[Path]:
    """Files whose pixels depend on careful loading: EXIF rotation, transparency, palette, 16-bit, CMYK."""
    photo = Image.fromarray(skimage.data.chelsea())
    exif = Image.Exif()
    exif[0x0112] = 6
    paths = {"rotated.jpg": lambda p: photo.save(p, exif=exif.tobytes()),
             "alpha.png": lambda p: photo.convert("RGBA").save(p),
             "palette.png": lambda p: photo.convert("P").save(p, transparency=0),
             "grey16.png": lambda p: Image.fromarray((skimage.data.camera().astype(np.uint16) * 257)).save(p),
             "cmyk.jpg": lambda p: photo.convert("CMYK").save(p)}
    for name, write in paths.items():
        write(tmp_path / name)
    return [tmp_path / name for name in paths]


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear", "nearest"])
@pytest.mark.parametrize("size, crop_pct", [(224, 0.875), (64, 0.95), (65, 1.0), (64, 1.3)])
def test_numpy_preprocessing_equals_eval_transform(interpolation, size, crop_pct):
    pre = Preprocessing(size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), interpolation, crop_pct)
    for image in photos():
        np.testing.assert_array_equal(preprocess_image(image, pre), eval_transform(pre)(image).numpy())


def test_example_loads_and_preprocesses_like_the_engine(tricky_images):
    example = load_example()
    pre = Preprocessing(64, interpolation="bicubic", crop_pct=0.95).to_dict()
    for path in tricky_images:
        ours, theirs = load_image(path), example.load_rgb(str(path))
        assert ours.size == theirs.size
        if path.name == "rotated.jpg":                      # landscape photo, EXIF says "rotate 90°"
            assert ours.size[0] < ours.size[1]
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs), err_msg=path.name)
        np.testing.assert_array_equal(preprocess_image(ours, pre), example.preprocess(theirs, pre))


@pytest.mark.parametrize("backbone", [pytest.param("efficientnet_lite0", marks=pytest.mark.slow), "resnet18"])
def test_torch_and_onnx_paths_agree_on_real_images(backbone, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, path in enumerate(val_paths(trained_run(backbone))):
        Image.open(path).save(folder / f"val{i:02d}.png")
    Image.fromarray(skimage.data.chelsea()).save(folder / "chelsea.jpg")
    Image.fromarray(skimage.data.coffee()).save(folder / "coffee.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (folder / "notes.txt").write_text("not an image")

    by_torch = predict_images(load_classifier(trained_run(backbone)), [folder], top_k=3)
    by_onnx = predict_images(load_classifier(exported(backbone).path), [folder], top_k=3)
    assert [p.path for p in by_torch.predictions] == [p.path for p in by_onnx.predictions]
    assert len(by_torch.predictions) == 14
    assert [p.label for p in by_torch.predictions] == [p.label for p in by_onnx.predictions]
    for a, b in zip(by_torch.predictions, by_onnx.predictions):
        assert abs(a.score - b.score) < 1e-5 and [t["label"] for t in a.top_k] == [t["label"] for t in b.top_k]
    assert by_torch.skipped == by_onnx.skipped == [{"path": str(folder / "broken.jpg"),
                                                     "reason": "corrupt or truncated image"}]


def test_checkpoint_and_run_folder_give_the_same_classifier():
    run = trained_run("resnet18")
    assert isinstance(load_classifier(run), TorchClassifier)
    assert load_classifier(run / "model.safetensors").classes == load_classifier(run).classes
    assert isinstance(load_classifier(exported("resnet18").path), OnnxClassifier)


def test_example_script_runs_without_torch():
    images = val_paths(trained_run("resnet18"), 4)
    code = ("import sys, runpy; sys.modules['torch'] = None; sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code, str(EXAMPLE), exported("resnet18").path, *images,
                           "--top-k", "2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    expected = predict_images(load_classifier(exported("resnet18").path), images, top_k=2).predictions
    assert [(r["path"], r["label"], r["score"], r["top_k"]) for r in rows] == \
        [(p.path, p.label, p.score, p.top_k) for p in expected]


def test_threshold_answers_unknown_and_top_k_is_capped():
    classifier = load_classifier(exported("resnet18").path)
    images = val_paths(trained_run("resnet18"), 3)
    certain = predict_images(classifier, images, threshold=1.0, top_k=50)
    assert {p.label for p in certain.predictions} == {UNKNOWN}
    assert all(len(p.top_k) == 10 and p.top_k[0]["score"] == p.score for p in certain.predictions)
    assert UNKNOWN not in {p.label for p in predict_images(classifier, images, threshold=0.0).predictions}
    with pytest.raises(ValueError, match="top-k"):
        predict_images(classifier, images, top_k=0)
    with pytest.raises(ValueError, match="threshold"):
        predict_images(classifier, images, threshold=1.5)


def test_csv_has_one_row_per_input(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n nope")
    report = predict_images(load_classifier(exported("resnet18").path),
                            [*val_paths(trained_run("resnet18"), 2), broken, tmp_path / "missing.jpg"], top_k=2)
    write_csv(report, tmp_path / "out.csv", top_k=2)
    rows = list(csv.DictReader((tmp_path / "out.csv").open(encoding="utf-8")))
    assert [r["error"] for r in rows] == ["", "", "no such file or folder", "not an image"]
    assert rows[0]["label"] in (rows[0]["label_1"], "unknown") and float(rows[0]["score"]) == float(rows[0]["score_1"])
    assert rows[0]["nearest"] == rows[0]["label_1"] and float(rows[0]["ood_score"]) and float(rows[0]["threshold"])
    assert rows[2]["ood_score"] == rows[2]["nearest"] == ""


class _Payload:
    """Unpickling this creates a file: proof that nothing unpickled it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def hostile_files(folder: Path) -> dict[str, Path]:
    real = Path(exported("resnet18").path).read_bytes()
    contents = {"random.onnx": np.random.default_rng(0).bytes(4096), "text.onnx": b"hello, I am a model\n",
                "truncated.onnx": real[:len(real) // 2], "random.safetensors": np.random.default_rng(1).bytes(999),
                "notes.txt": b"just text", "payload.pt": pickle.dumps(_Payload(folder / "PWNED")),
                "payload.safetensors": pickle.dumps({"w": _Payload(folder / "PWNED")})}
    paths = {}
    for name, data in contents.items():
        paths[name] = folder / name
        paths[name].write_bytes(data)
    import torch
    torch.save({"state_dict": {"w": torch.zeros(2)}, "evil": _Payload(folder / "PWNED")}, folder / "zip.pth")
    paths["zip.pth"] = folder / "zip.pth"
    return paths


def test_hostile_model_files_are_clear_errors_and_never_unpickled(tmp_path):
    for name, path in hostile_files(tmp_path).items():
        with pytest.raises((ModelFileError, CheckpointError)) as caught:
            load_classifier(path)
        message = str(caught.value)
        if name.startswith(("payload", "zip")):
            assert "pickled" in message and "never loads" in message, name
        elif name.endswith(".onnx"):
            assert "not a valid ONNX model" in message, name
        else:
            assert "not a safetensors checkpoint" in message, name
    with pytest.raises(ModelFileError, match="not a run folder"):
        load_classifier(tmp_path)
    assert not (tmp_path / "PWNED").exists()


def test_onnx_without_our_metadata_is_refused(tmp_path):
    import onnx
    proto = onnx.load(exported("resnet18").path)
    del proto.metadata_props[:]
    onnx.save(proto, tmp_path / "bare.onnx")
    with pytest.raises(ModelFileError, match="no TransferLab metadata"):
        load_classifier(tmp_path / "bare.onnx")


def test_cli_predict_prints_json_lines_and_csv(tmp_path):
    images = val_paths(trained_run("resnet18"), 2)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff garbage")
    done = run_cli("predict", exported("resnet18").path, *images, broken, "--top-k", "3", "--csv", tmp_path / "p.csv")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["path"] for r in rows] == images
    assert all(set(r) == {"path", "label", "score", "top_k", "nearest", "ood_score", "threshold"}
               and len(r["top_k"]) == 3 for r in rows)
    assert "broken.jpg" in done.stderr and (tmp_path / "p.csv").is_file()


@pytest.mark.parametrize("name", ["payload.pt", "truncated.onnx"])
def test_cli_predict_hostile_model_exits_2(tmp_path, name):
    model = hostile_files(tmp_path)[name]
    done = run_cli("predict", model, val_paths(trained_run("resnet18"), 1)[0])
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and model.name in done.stderr
    assert not (tmp_path / "PWNED").exists()
