"""Save the labelling window ("Label…" in the Data step) mid-batch on the bundled demo photos.

    .venv/bin/python scripts/screenshot_labelling.py [--out docs/labelling.png] [--rounds 2] [--into 2]

The demo becomes a small labelled set (6 photos a class) and an unlabelled pool of the rest, renamed so no file
name tells its class. `--rounds` whole batches are labelled with each photo's true class (a new head after each,
a point on the plot), then `--into` samples of the next one, so the window shows a sample mid-batch. Runs under
Xvfb (helpers in scripts/shots.py); settings, runs and the copies go to temporary folders.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from shots import ROOT, run, save, settle, wait_for

DEMO = ROOT / "resources" / "demo" / "fashion-mnist"
LABELLED_PER_CLASS = 6


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "labelling.png"))
    parser.add_argument("--rounds", type=int, default=2, help="whole batches labelled before the screenshot")
    parser.add_argument("--into", type=int, default=2, help="samples of the next batch labelled")
    return parser.parse_args()


def split_demo(root: Path) -> tuple[Path, Path, dict[str, str]]:
    """The labelled set, the pool, and each pool photo's true class (what the script answers)."""
    labelled, pool, truth = root / "labelled", root / "pool", {}
    pool.mkdir(parents=True)
    for folder in sorted(DEMO.iterdir()):
        photos = sorted(folder.glob("*.png"))
        (labelled / folder.name).mkdir(parents=True)
        for photo in photos[:LABELLED_PER_CLASS]:
            shutil.copy(photo, labelled / folder.name / photo.name)
        for photo in photos[LABELLED_PER_CLASS:]:
            copy = pool / f"photo_{len(truth):03d}.png"
            shutil.copy(photo, copy)
            truth[str(copy)] = folder.name
    return labelled, pool, truth


def answer(window, truth: dict[str, str], count: int) -> None:
    """Label `count` samples with their true class, by the keys a user presses."""
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest
    view = window.data_panel.labelling_dialog.view
    for _ in range(count):
        if view.row is None:
            return
        view.classes.setCurrentRow(window.state.report.classes.index(truth[view.row["path"]]))
        QTest.keyClick(view.classes, Qt.Key.Key_Return)


def take_screenshot(args: argparse.Namespace) -> int:
    os.environ["TRANSFERLAB_DATA_DIR"] = tempfile.mkdtemp(prefix="transferlab-screenshot-")
    labelled, pool, truth = split_demo(Path(tempfile.mkdtemp(prefix="labelling-")))
    from gui.app import create_window
    _app, window = create_window([])
    window.resize(1280, 860)
    try:
        wait_for(window.engine_ready)
        window.scans.load_dataset([str(labelled)])
        wait_for(window.scan_finished)
        panel, failed = window.data_panel, []
        window.labelling_failed.connect(failed.append)
        panel.ask_unlabelled_pool = lambda modality: [str(pool)]
        panel.pool_button.click()
        wait_for(window.labelling.pool_read, timeout_s=60)
        panel.label_button.click()
        wait_for(window.labelling_ready, timeout_s=600)
        for _ in range(args.rounds):
            answer(window, truth, window.labelling.batch_size - 1)
            finish_batch(window, truth)
        if failed or panel.labelling_dialog.view.row is None:
            print(f"the labelling did not start: {failed[0] if failed else 'timed out'}", file=sys.stderr)
            return 1
        answer(window, truth, args.into)
        settle(800)
        save(panel.labelling_dialog, args.out)
    finally:
        window.shutdown()
        window.close()
    return 0


def finish_batch(window, truth: dict[str, str]) -> None:
    """The batch's last answer, which starts the next round, given once the wait for that round is armed."""
    from PySide6.QtCore import QTimer
    QTimer.singleShot(0, lambda: answer(window, truth, 1))
    wait_for(window.labelling_ready, timeout_s=120)


if __name__ == "__main__":
    arguments = parse_args()           # --help works without a display
    sys.exit(run(lambda: take_screenshot(arguments)))
