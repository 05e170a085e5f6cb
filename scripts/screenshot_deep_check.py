"""Save the Data step's deep check window ("Check deeper…") on a dataset with planted problems.

    .venv/bin/python scripts/screenshot_deep_check.py [DATA] [--out docs/deep_check.png] [--tab 0|1|2]

DATA: a dataset to check; without it, a copy of the bundled Fashion-MNIST demo split into train/ and test/,
with planted problems: cropped, resized and re-encoded copies of test photos in train, photos filed under
another class, a black and a white picture. The first row of the list shown is decided with the list's first
fix ("Relabel as …", "Exclude …"), so a decision shows. Runs under Xvfb (helpers in scripts/shots.py); settings
and runs go to a temporary folder.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

from shots import ROOT, run, save, settle, wait_for

DEMO = ROOT / "resources" / "demo" / "fashion-mnist"
TEST_SHARE = 0.2
COPIES, MISFILED = 6, 4


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", help="a dataset (default: the demo with planted problems)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "deep_check.png"))
    parser.add_argument("--tab", type=int, default=1, help="the list shown: 0 mislabelled, 1 near-duplicates, 2 odd")
    return parser.parse_args()


def planted_demo(root: Path) -> Path:
    """The demo as train/ and test/ folders, with the planted problems the docstring lists."""
    from PIL import Image
    rng = random.Random(0)
    for folder in sorted(DEMO.iterdir()):
        photos = sorted(folder.glob("*.png"))
        rng.shuffle(photos)
        cut = round(TEST_SHARE * len(photos))
        for split, chosen in (("test", photos[:cut]), ("train", photos[cut:])):
            (root / split / folder.name).mkdir(parents=True, exist_ok=True)
            for photo in chosen:
                shutil.copy(photo, root / split / folder.name / photo.name)
    tests = sorted((root / "test").glob("*/*.png"))
    for number, photo in enumerate(rng.sample(tests, COPIES)):
        image = Image.open(photo).convert("RGB")
        crop = image.crop((1, 1, image.width - 1, image.height - 2)).resize((40, 40), Image.BICUBIC)
        crop.save(root / "train" / photo.parent.name / f"copy_{number}.jpg", quality=80)
    classes = sorted(p.name for p in (root / "train").iterdir())
    for photo in rng.sample(sorted((root / "train").glob("*/0*.png")), MISFILED):
        other = rng.choice([name for name in classes if name != photo.parent.name])
        photo.rename(root / "train" / other / f"misfiled_{photo.name}")
    Image.new("RGB", (28, 28)).save(root / "train" / classes[0] / "black.png")
    Image.new("RGB", (28, 28), (255, 255, 255)).save(root / "train" / classes[1] / "white.png")
    return root


def wait_for_either(first, second, timeout_s: float) -> None:
    """Spin the event loop until one of two signals fires (or the timeout passes)."""
    from PySide6.QtCore import QEventLoop, QTimer
    loop = QEventLoop()
    first.connect(loop.quit)
    second.connect(loop.quit)
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    loop.exec()
    first.disconnect(loop.quit)
    second.disconnect(loop.quit)


def take_screenshot(args: argparse.Namespace) -> int:
    os.environ["TRANSFERLAB_DATA_DIR"] = tempfile.mkdtemp(prefix="transferlab-screenshot-")
    data = Path(args.data).resolve() if args.data else planted_demo(Path(tempfile.mkdtemp(prefix="planted-")) / "shop")
    from gui.app import create_window
    _app, window = create_window([])
    window.resize(1280, 860)
    try:
        wait_for(window.engine_ready)
        window.scans.load_dataset([str(data)])
        wait_for(window.scan_finished)
        while not window.start_action.isEnabled():
            wait_for(window.model_ready)
        panel = window.data_panel
        failed = []
        window.deep_check_failed.connect(failed.append)
        panel.deep_check_button.click()
        wait_for_either(window.deep_check_finished, window.deep_check_failed, timeout_s=900)
        if failed or panel.deep_check.result is None:
            print(f"the deep check did not finish: {failed[0] if failed else 'timed out'}", file=sys.stderr)
            return 1
        view = panel.deep_check
        view.tabs.setCurrentIndex(args.tab)
        shown = view.lists[args.tab]
        if shown.model.rowCount():
            shown.buttons.itemAt(0).widget().click()      # a decided row, then the next one selected
        wait_for(view.look.thumbnails_arrived, timeout_s=30)
        settle(800)
        save(panel.deep_check_dialog, args.out)
    finally:
        window.shutdown()
        window.close()
    return 0


if __name__ == "__main__":
    arguments = parse_args()           # --help works without a display
    sys.exit(run(lambda: take_screenshot(arguments)))
