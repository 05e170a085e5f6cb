"""Crash safety: a full or read-only disk fails clearly and keeps the earlier files, damaged cache entries are
recomputed, and dataset files that vanish or break during training are skipped, never a crash."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import ROOT, write_colour_dataset

from engine.core.callbacks import Callback
from engine.core.errors import StorageError, readable_error
from engine.core.files import write_json
from engine.data.imagecache import DecodedImageCache
from engine.data.images import load_image
from engine.data.preprocessing import Preprocessing
from engine.data.scan import scan_dataset
from engine.data.transforms import ImageDataset, ReadableLoader, eval_transform
from engine.models.catalog import create_model
from engine.models.layers import LayerTree
from engine.project import Project, ProjectError, load_project
from engine.training.caches import ActivationCache, FeatureCache, plan_cache, read_entry
from engine.training.config import TrainConfig
from engine.training.trainer import Trainer

SMALL = dict(image_size=64, batch_size=8, epochs=2)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _results(run: Path) -> dict[str, bytes]:
    """A finished run's results (not its status or resume state, which a later fit updates by design)."""
    names = ("model.safetensors", "metrics.json", "predictions.json", "history.json", "config.json",
             "dataset_report.txt")
    return {name: (run / name).read_bytes() for name in names}


# -- a disk that refuses writes -------------------------------------------------------------------------

LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)       # else the kernel kills the process at the limit
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY))
sys.argv = ["main.py", *{args!r}]
sys.path.insert(0, {root!r})
import runpy
runpy.run_path({main!r}, run_name="__main__")
"""


def _run_with_file_size_limit(limit: int, args: list[str], env: dict) -> subprocess.CompletedProcess:
    """main.py with every file it writes capped at `limit` bytes: writes beyond fail with EFBIG, as on a
    full disk (RLIMIT_FSIZE)."""
    code = textwrap.dedent(LIMITED.format(limit=limit, args=args, root=str(ROOT), main=str(ROOT / "main.py")))
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


def test_a_full_disk_stops_training_with_one_clear_line_and_keeps_the_earlier_run(tmp_path, capsys):
    """The checkpoint (13 MB) cannot be written, nor the train features (about 120 kB, more than the 64 kB
    allowed): the features stay in memory, training reaches the first large write in the run folder, and
    the run stops there with one line."""
    from engine.cli.main import main as cli_main
    data = write_colour_dataset(tmp_path / "data", per_class=12)
    out = tmp_path / "run"
    args = ["train", str(data), "--out", str(out), "--epochs", "1", "--image-size", "64", "--batch-size", "8"]
    assert cli_main(args) == 0                               # the earlier run, in full
    capsys.readouterr()
    earlier = _results(out)
    user = tmp_path / "user"
    done = _run_with_file_size_limit(64_000, args, {"TRANSFERLAB_CACHE_DIR": str(user / "cache"),
                                                    "TRANSFERLAB_DATA_DIR": str(user / "data")})
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert f"no room to write {out}{os.sep}" in last, done.stderr
    assert "any earlier version of the file is unchanged" in last
    assert "Traceback" not in done.stderr + done.stdout
    assert _results(out) == earlier, "the earlier results byte-identical (config.json rewritten identically)"
    assert not list(out.rglob("*.tmp"))
    assert not list((user / "cache").rglob("*.tmp"))
    log = (user / "data" / "logs" / "transferlab.log").read_text()
    assert "features not kept on disk" in log, "the cache write failed and training went on"


def test_a_refused_atomic_write_names_the_target_and_leaves_the_old_file(tmp_path):
    """EFBIG for real (RLIMIT_FSIZE, in a child process): one readable line, old bytes kept, no temporary."""
    target = tmp_path / "metrics.json"
    write_json(target, {"val_accuracy": 0.5})
    before = target.read_bytes()
    code = textwrap.dedent(f"""
        import resource, signal, sys
        import numpy as np
        sys.path.insert(0, {str(ROOT)!r})
        from safetensors.numpy import save_file
        from engine.core.errors import StorageError, readable_error
        from engine.core.files import atomic_path, write_json
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, resource.RLIM_INFINITY))
        for write in (lambda: write_json({str(target)!r}, {{"big": "x" * 50_000}}),
                      lambda: save_file({{"w": np.zeros(50_000, np.float32)}}, str(tmp))):
            try:
                with atomic_path({str(target)!r}) as tmp:
                    write()
            except StorageError as exc:
                print(exc.errno, readable_error(exc))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2, done.stderr
    for line in lines:            # json (Python's own write) and safetensors (errno only in the message)
        assert line.startswith("27 no room to write " + str(target)), line
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_a_zip_extraction_the_disk_refuses_is_not_kept_as_complete(tmp_path):
    """A member that does not fit stops the extraction (it would otherwise be cached as 'skipped' for good)."""
    import zipfile
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("red/a.png", b"x" * 1000)
        zf.writestr("red/b.png", os.urandom(50_000))
    code = textwrap.dedent(f"""
        import os, resource, signal, sys
        from pathlib import Path
        sys.path.insert(0, {str(ROOT)!r})
        os.environ["TRANSFERLAB_CACHE_DIR"] = {str(tmp_path / "cache")!r}
        from engine.data.ziparchive import extract_zip
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, resource.RLIM_INFINITY))
        try:
            extract_zip(Path({str(archive)!r}), lambda: None)
        except OSError as exc:
            print(exc.errno)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "27", done.stderr
    assert list((tmp_path / "cache" / "zips").iterdir()) == [], "neither the extraction nor its partial copy"


def test_storage_errors_read_as_one_plain_line():
    full = OSError(28, "No space left on device", "/runs/a/model.safetensors")
    assert readable_error(full) == ("the disk is full while writing /runs/a/model.safetensors: "
                                    "free some space and try again")
    refused = StorageError(30, "Read-only file system", "/mnt/ro/metrics.json")
    assert isinstance(refused, OSError) and refused.errno == 30
    assert str(refused).startswith("the disk is read-only while writing /mnt/ro/metrics.json")
    assert readable_error(OSError(2, "No such file or directory", "x")).startswith("FileNotFoundError")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_run_folder_gives_a_clear_message(colour_dataset, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    write_json(out / "metrics.json", {"earlier": True})
    before = _files(out)
    out.chmod(0o500)
    try:
        with pytest.raises(StorageError) as refused:
            Trainer(scan_dataset(colour_dataset), TrainConfig(**SMALL), out).fit()
        assert "no permission to write" in readable_error(refused.value)
        assert str(out) in readable_error(refused.value)
    finally:
        out.chmod(0o700)
    assert _files(out) == before


# -- damaged cache entries -----------------------------------------------------------------------------

def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])


def _flip_last_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("kind, damage", [("features", _truncate), ("activations", _flip_last_byte)],
                         ids=["features-truncated", "activations-one-byte-changed"])
def test_a_damaged_cache_entry_is_recomputed_never_trusted(colour_dataset, tmp_path, damage, kind):
    bundle = create_model("efficientnet_lite0", 3, weights="random", input_size=64)
    LayerTree(bundle.model).apply_preset("head" if kind == "features" else "last-n", 1)
    model, pre, folder = bundle.model.eval(), bundle.preprocessing, tmp_path / kind

    def cache():
        if kind == "features":
            return FeatureCache(model, folder, frozen_runtime="pytorch")
        return ActivationCache(model, plan_cache(model).boundary, folder, frozen_runtime="pytorch")

    train = scan_dataset(colour_dataset, seed=0).split("train")
    args = ([s.path for s in train], [s.label for s in train], "hash", [eval_transform(pre)], "eval", 0)
    fresh = cache().features(*args)
    [entry] = folder.glob("*.safetensors")
    damage(entry)
    again = cache()
    recomputed = again.features(*args)
    assert again.misses == 1 and again.hits == 0, "the damaged entry was not used"
    assert torch.equal(recomputed, fresh)
    assert any(note.startswith(f"a {kind} cache entry failed its check") for note in again.notes), again.notes
    third = cache()
    assert torch.equal(third.features(*args), fresh) and third.hits == 1, "the rewritten entry is sound"


def test_a_damaged_decoded_image_cache_is_rebuilt(colour_dataset, tmp_path):
    """Same size, one byte changed: only the checksum can tell, and it is checked when the file is opened."""
    pre = Preprocessing(64, interpolation="bicubic")
    paths = sorted(str(p) for p in colour_dataset.rglob("*.png"))
    cache = DecodedImageCache(tmp_path / "images", budget=0)
    first, _ = cache.build(paths, "hash", pre)
    del first
    _flip_last_byte(next((tmp_path / "images").glob("*.u8")))
    rebuilt, note = cache.build(paths, "hash", pre)
    assert rebuilt.where == "disk" and "reused" not in note and "checksum" in note, note
    transform = eval_transform(pre)
    assert torch.equal(transform(rebuilt.image(len(paths) - 1)), transform(load_image(paths[-1])))


# -- dataset files that vanish or break during training ------------------------------------------------

class DeleteAfterFirstEpoch(Callback):
    def __init__(self, paths: list[str]):
        self.paths = paths

    def on_epoch_end(self, epoch, logs):
        if epoch == 1:
            for path in self.paths:
                os.remove(path)


def _predicted_paths(run: Path) -> dict[str, list[str]]:
    predictions = json.loads((run / "predictions.json").read_text())
    return {split: [p["path"] for p in rows] for split, rows in predictions.items()}


def test_images_deleted_during_training_are_skipped_and_noted(colour_dataset, tmp_path):
    """cache='off': every epoch reads the files, so epoch 2, validation and the final metrics meet the gaps."""
    report = scan_dataset(colour_dataset, seed=0)
    train, val = report.split("train"), report.split("val")
    gone = [train[0].path, val[0].path]
    trainer = Trainer(report, TrainConfig(**SMALL, cache="off"), tmp_path / "run", [DeleteAfterFirstEpoch(gone)])
    result = trainer.fit()
    assert result.status == "completed" and len(result.history) == 2
    assert set(trainer.inputs.unreadable) == set(gone)
    names = ", ".join("/".join(Path(p).parts[-2:]) for p in gone)
    assert f"skipped 2 images that could not be read during training: {names}" in trainer.path_notes
    assert set(json.loads((tmp_path / "run" / "metrics.json").read_text())["skipped_images"]) == set(gone), \
        "the run's report keeps the skipped images after the fit"
    predicted = _predicted_paths(tmp_path / "run")
    assert predicted["val"] == [s.path for s in val[1:]], "each prediction keeps its own file"


def test_images_gone_or_broken_before_the_feature_pass_are_left_out(colour_dataset, tmp_path):
    """Deleted and truncated between the scan and the fit: the cached-features pass leaves both out with
    their labels, the fit trains and evaluates on the rest, and nothing with a gap is cached on disk."""
    report = scan_dataset(colour_dataset, seed=0)
    train, test = report.split("train"), report.split("test")
    os.remove(train[1].path)
    Path(test[0].path).write_bytes(Path(test[0].path).read_bytes()[:60])
    trainer = Trainer(report, TrainConfig(**SMALL, augmentation="none"), tmp_path / "run")
    result = trainer.fit()
    assert result.status == "completed" and result.metrics["test_accuracy"] is not None
    assert set(trainer.inputs.unreadable) == {train[1].path, test[0].path}
    assert any(note.startswith("skipped 2 images") for note in trainer.path_notes), trainer.path_notes
    assert _predicted_paths(tmp_path / "run")["test"] == [s.path for s in test[1:]]
    entries = list(trainer.inputs.feature_cache.folder.glob("*.safetensors"))
    assert entries and all(torch.isfinite(read_entry(e)).all() for e in entries), "no pass with gaps kept"


@pytest.mark.parametrize("budget", [None, 0], ids=["memory", "disk"])
def test_an_image_gone_before_decoding_once_leaves_a_gap_that_loading_skips(colour_dataset, tmp_path, budget):
    """Fine-tuning decodes every image once: a file gone by then is a gap, which the loader skips and
    reports; a disk cache with a gap is not reused, so a file that comes back is read again."""
    pre = Preprocessing(64, interpolation="bicubic")
    paths = sorted(str(p) for p in colour_dataset.rglob("*.png"))
    gone = paths[3]
    kept = Path(gone).read_bytes()
    os.remove(gone)
    cache = DecodedImageCache(tmp_path / "images", budget=budget)
    images, _ = cache.build(paths, "hash", pre)
    noted = []
    loader = ReadableLoader(ImageDataset(paths, list(range(len(paths))), eval_transform(pre),
                                         images.source(range(len(paths))), skip_unreadable=True),
                            lambda path, reason: noted.append(path), batch_size=4)
    labels = torch.cat([batch_labels for _, batch_labels in loader])
    assert labels.tolist() == [i for i in range(len(paths)) if i != 3]
    assert noted == [gone] and loader.skipped_rows == {3: gone}
    if budget == 0:
        Path(gone).write_bytes(kept)
        again, note = cache.build(paths, "hash", pre)
        assert "reused" not in note and not again.unreadable


# -- project files -------------------------------------------------------------------------------------

def test_a_truncated_project_file_is_refused_with_a_clear_message(tmp_path):
    saved = Path(Project(dataset_sources=[str(tmp_path / "data")], config={"epochs": 3}).save(tmp_path / "p"))
    saved.write_bytes(saved.read_bytes()[:40])
    with pytest.raises(ProjectError, match="not a TransferLab project"):
        load_project(saved)


def test_a_project_that_cannot_be_read_is_refused_in_the_window(qtbot, tmp_path):
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QWidget

    from gui.project_io import ProjectController
    from gui.state import AppState
    parent = QWidget()
    qtbot.addWidget(parent)
    controller = ProjectController(AppState(), QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat),
                                   parent)
    folder = tmp_path / "looks-like.tlproj"
    folder.mkdir()
    with qtbot.waitSignal(controller.open_failed) as failed:
        assert not controller.open(str(folder))
    assert failed.args[0].startswith("looks-like.tlproj cannot be read")
    controller.message_box.close()
