"""Run the real app under Xvfb, train on the demo dataset, and save a screenshot mid-training.

    .venv/bin/python scripts/screenshot.py [--out docs/screenshot.png] [--epochs 12] [--at-epoch 6]

Without a display it re-runs itself under `xvfb-run`. Settings and runs go to a temporary folder,
so the window has its default layout and your own settings are untouched.
"""
from __future__ import annotations

import argparse
import sys

from shots import ROOT, demo_window, run, save, start_training, wait_for


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshot.png"))
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--at-epoch", type=int, default=6, help="take the picture when this epoch ends")
    parser.add_argument("--image-size", type=int, default=96)
    return parser.parse_args()


def take_screenshot(args: argparse.Namespace) -> int:
    with demo_window() as window:
        ended = []
        window.epoch_ended.connect(lambda epoch, _logs: ended.append(epoch))
        start_training(window, args.epochs, args.image_size, last_blocks=2)
        while len(ended) < args.at_epoch:
            wait_for(window.epoch_ended)
        for _ in range(5):                          # let the plot timer draw the latest points
            wait_for(window.train_panel.plots.timer.timeout)
        save(window, args.out)
        print(f"after epoch {ended[-1]}")
    return 0


if __name__ == "__main__":
    arguments = parse_args()           # --help works without a display
    sys.exit(run(lambda: take_screenshot(arguments)))
