"""Assess the backbones and run a short automatic search on the demo dataset under Xvfb, saving the Model
step's assessment table and the Train step during and after the search.

    .venv/bin/python scripts/screenshot_auto.py [--out-dir /tmp/shots_auto] [--minutes 1.5]

Settings and runs go to a temporary folder (helpers in scripts/shots.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shots import demo_window, run, save, settle, wait_for


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default="/tmp/shots_auto")
    parser.add_argument("--minutes", type=float, default=1.5, help="the automatic search's time")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--during", type=int, default=6, help="the 'during' picture after this many candidates")
    return parser.parse_args()


def take_screenshots(args: argparse.Namespace) -> int:
    out = Path(args.out_dir)
    with demo_window(1280, 800) as window:
        window.train_panel.settings.set_values(image_size=args.image_size, epochs=8, batch_size=32)
        model = window.model_panel
        window.tabs.setCurrentWidget(model)
        model.right_tabs.setCurrentWidget(model.assessment)
        model.assessment.assess_button.click()
        settle(1500)
        save(window, str(out / "model_assessing.png"))
        wait_for(window.assessment_finished, timeout_s=900)
        settle(300)
        save(window, str(out / "model_assessment.png"))

        panel = window.train_panel
        window.tabs.setCurrentWidget(panel)
        panel.mode.set_mode("automatic", minutes=args.minutes)
        rows = []
        window.training_started.connect(lambda run: run.events.candidate.connect(rows.append))
        window.start_training()
        while len(rows) < args.during and window.training_task is not None:
            wait_for(window.train_panel.board.clock.timeout, timeout_s=60)
        settle(500)
        save(window, str(out / "train_search_running.png"))
        while window.training_task is not None:     # finished, failed or stopped
            settle(500)
        settle(500)
        save(window, str(out / "train_search_done.png"))
        window.tabs.setCurrentWidget(window.results_panel)
        settle(500)
        save(window, str(out / "results_after_search.png"))
        window.tabs.setCurrentWidget(model)
        model.right_tabs.setCurrentIndex(0)
        settle(300)
        save(window, str(out / "model_layers.png"))
    return 0


if __name__ == "__main__":
    arguments = parse_args()           # --help works without a display
    sys.exit(run(lambda: take_screenshots(arguments)))
