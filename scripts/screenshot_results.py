"""Train briefly on the demo dataset under Xvfb, then save the Results step and a Grad-CAM dialog.

    .venv/bin/python scripts/screenshot_results.py [--out docs/results.png] [--epochs 5]

The gallery shows the most confidently wrong images; the dialog explains the worst one.
Settings and runs go to a temporary folder (see scripts/screenshot.py, whose helpers this uses).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.screenshot import rerun_under_xvfb, wait_for  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "results.png"))
    parser.add_argument("--dialog-out", default=str(ROOT / "docs" / "gradcam.png"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=96)
    return parser.parse_args()


def take_screenshots(args: argparse.Namespace) -> int:
    os.environ["TRANSFERLAB_DATA_DIR"] = tempfile.mkdtemp(prefix="transferlab-screenshot-")
    from gui.app import create_window
    app, window = create_window([])
    window.resize(1280, 860)
    try:
        wait_for(app, window.engine_ready)
        window.open_demo()
        wait_for(app, window.scan_finished)
        while not window.start_action.isEnabled():
            wait_for(app, window.model_ready)
        window.model_panel.n_blocks.setValue(2)
        window.model_panel.train_last_blocks()
        window.train_panel.settings.set_values(epochs=args.epochs, image_size=args.image_size, batch_size=32)
        window.start_training()
        wait_for(app, window.training_finished, timeout_s=900)
        panel = window.results_panel
        window.tabs.setCurrentWidget(panel)
        if panel.gallery.paths() and not all(p in panel.thumbnails for p in panel.gallery.paths()):
            wait_for(app, panel.thumbnails_loaded, timeout_s=60)
        panel.gallery.select_path(panel.gallery.paths()[0])
        save(window, args.out)
        panel.gallery.explain_button.click()
        wait_for(app, panel.explanation_ready, timeout_s=120)
        save(panel.image_dialog, args.dialog_out)
    finally:
        window.shutdown()
        window.close()
    return 0


def save(widget, path: str) -> None:
    from PySide6.QtWidgets import QApplication
    for _ in range(3):
        QApplication.processEvents()
    picture = widget.screen().grabWindow(widget.winId())
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    print(f"saved {path} ({picture.width()}×{picture.height()})")


def main() -> int:
    args = parse_args()
    if not os.environ.get("DISPLAY") and not os.environ.get("TRANSFERLAB_UNDER_XVFB"):
        return rerun_under_xvfb()
    return take_screenshots(args)


if __name__ == "__main__":
    sys.exit(main())
