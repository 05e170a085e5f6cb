"""Screenshot of the Try-it step: train briefly on the demo dataset, classify a few demo images, save.

    .venv/bin/python scripts/screenshot_predict.py [--out docs/predict.png] [--epochs 4] [--images 6]

Like scripts/screenshot.py (whose helpers it uses), it re-runs itself under `xvfb-run` without a
display and keeps settings and runs in a temporary folder.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from screenshot import rerun_under_xvfb, wait_for  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "predict.png"))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--images", type=int, default=6, help="demo images to classify, one per class")
    return parser.parse_args()


def settle(ms: int) -> None:
    """Run the event loop for `ms` milliseconds (the plots' timer stops with training)."""
    from PySide6.QtCore import QEventLoop, QTimer
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def take_screenshot(args: argparse.Namespace) -> int:
    os.environ["TRANSFERLAB_DATA_DIR"] = tempfile.mkdtemp(prefix="transferlab-screenshot-")
    from engine.paths import demo_dataset
    from gui.app import create_window
    app, window = create_window([])
    window.resize(1280, 800)
    try:
        wait_for(app, window.engine_ready)
        window.open_demo()
        wait_for(app, window.scan_finished)
        while not window.start_action.isEnabled():
            wait_for(app, window.model_ready)
        window.train_panel.settings.set_values(epochs=args.epochs, image_size=96, batch_size=32)
        window.start_training()
        wait_for(app, window.training_finished)
        panel = window.predict_panel
        window.tabs.setCurrentWidget(panel)
        images = [str(sorted(folder.iterdir())[-1]) for folder in sorted(demo_dataset().iterdir())][:args.images]
        panel.predict(images)
        wait_for(app, panel.predictions_shown)
        settle(500)                               # let the table lay out and paint
        picture = window.screen().grabWindow(window.winId())
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        picture.save(args.out)
        print(f"saved {args.out} ({picture.width()}×{picture.height()}): {panel.predicted_labels()}")
    finally:
        window.shutdown()
        window.close()
    return 0


def main() -> int:
    args = parse_args()
    if not os.environ.get("DISPLAY") and not os.environ.get("TRANSFERLAB_UNDER_XVFB"):
        return rerun_under_xvfb()
    return take_screenshot(args)


if __name__ == "__main__":
    sys.exit(main())
