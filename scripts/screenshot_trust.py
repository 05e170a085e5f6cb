"""Save the Results step's Trust tab for a finished run, with a folder of "none of these" scored.

    .venv/bin/python scripts/screenshot_trust.py RUN_DIR UNFAMILIAR [--out docs/trust.png] [--accept 0.95]

RUN_DIR: a run folder (`main.py train DATA --out RUN_DIR`); UNFAMILIAR: a folder of images (or a file of
texts) of none of its classes. Runs under Xvfb (helpers in scripts/shots.py).
"""
from __future__ import annotations

import argparse
import sys

from shots import ROOT, demo_window, run, save, wait_for


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("unfamiliar")
    parser.add_argument("--out", default=str(ROOT / "docs" / "trust.png"))
    parser.add_argument("--accept", type=float, default=None)
    return parser.parse_args()


def take_screenshot(args: argparse.Namespace) -> int:
    with demo_window(1280, 760) as window:
        panel = window.results_panel
        window.tabs.setCurrentWidget(panel)
        panel.show_run_folder(args.run_dir)
        panel.views.setCurrentWidget(panel.trust)
        panel.trust.score_unfamiliar(args.unfamiliar)
        wait_for(panel.trust.unfamiliar_scored, timeout_s=300)
        if args.accept is not None:
            from gui.trust_view import position_of
            panel.trust.slider.setValue(position_of(args.accept))
        save(window, args.out)
    return 0


if __name__ == "__main__":
    arguments = parse_args()           # --help works without a display
    sys.exit(run(lambda: take_screenshot(arguments)))
