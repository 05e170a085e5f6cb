"""Train briefly on the demo dataset under Xvfb, then save the Results step and a Grad-CAM dialog.

    .venv/bin/python scripts/screenshot_results.py [--out docs/results.png] [--epochs 5]

The gallery shows the most confidently wrong images; the dialog explains the worst one.
Settings and runs go to a temporary folder (helpers in scripts/shots.py).
"""
from __future__ import annotations

import argparse
import sys

from shots import ROOT, demo_window, run, save, start_training, wait_for


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "results.png"))
    parser.add_argument("--dialog-out", default=str(ROOT / "docs" / "gradcam.png"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=96)
    return parser.parse_args()


def take_screenshots(args: argparse.Namespace) -> int:
    with demo_window(1280, 860) as window:
        start_training(window, args.epochs, args.image_size, last_blocks=2)
        wait_for(window.training_finished, timeout_s=900)
        panel = window.results_panel
        window.tabs.setCurrentWidget(panel)
        if panel.gallery.paths() and not all(p in panel.thumbnails for p in panel.gallery.paths()):
            wait_for(panel.thumbnails_loaded, timeout_s=60)
        panel.gallery.select_path(panel.gallery.paths()[0])
        save(window, args.out)
        panel.gallery.explain_button.click()
        wait_for(panel.explanation_ready, timeout_s=120)
        save(panel.image_dialog, args.dialog_out)
    return 0


if __name__ == "__main__":
    arguments = parse_args()           # --help works without a display
    sys.exit(run(lambda: take_screenshots(arguments)))
