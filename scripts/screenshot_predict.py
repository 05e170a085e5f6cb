"""Screenshot of the Try-it step: train briefly on the demo dataset, classify a few demo images, save.

    .venv/bin/python scripts/screenshot_predict.py [--out docs/predict.png] [--epochs 4] [--images 6]

Like scripts/screenshot.py (helpers in scripts/shots.py), it re-runs itself under `xvfb-run` without a
display and keeps settings and runs in a temporary folder.
"""
from __future__ import annotations

import argparse
import sys

from shots import ROOT, demo_window, run, save, settle, start_training, wait_for


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "predict.png"))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--images", type=int, default=6, help="demo images to classify, one per class")
    return parser.parse_args()


def take_screenshot(args: argparse.Namespace) -> int:
    from engine.core.paths import demo_dataset
    with demo_window() as window:
        start_training(window, args.epochs, image_size=96)
        wait_for(window.training_finished)
        panel = window.predict_panel
        window.tabs.setCurrentWidget(panel)
        images = [str(sorted(folder.iterdir())[-1]) for folder in sorted(demo_dataset().iterdir())][:args.images]
        panel.predict(images)
        wait_for(panel.predictions_shown)
        settle(500)                               # let the table lay out and paint
        save(window, args.out)
        print(f"predicted: {panel.predicted_labels()}")
    return 0


if __name__ == "__main__":
    arguments = parse_args()           # --help works without a display
    sys.exit(run(lambda: take_screenshot(arguments)))
