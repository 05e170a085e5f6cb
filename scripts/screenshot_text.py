"""Run the real app under Xvfb on a file of texts: the Data step (report, column pickers), the Model step
(the text encoder's layer tree), a head-only run's Results step, and Try it on the trained run.

    .venv/bin/python scripts/screenshot_text.py TEXTS.csv [--out-dir /tmp/shots_text] [--epochs 5]

Without a display it re-runs itself under `xvfb-run`. Settings and runs go to a temporary folder.
"""
from __future__ import annotations

import argparse
import os
import tempfile

from shots import run, save, settle, wait_for


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("texts", help="a CSV/TSV/JSONL of labelled texts, or a folder of .txt files")
    parser.add_argument("--out-dir", default="/tmp/shots_text")
    parser.add_argument("--epochs", type=int, default=5)
    return parser.parse_args()


def take_screenshots(args: argparse.Namespace) -> int:
    os.environ["TRANSFERLAB_DATA_DIR"] = tempfile.mkdtemp(prefix="transferlab-screenshot-")
    from gui.app import create_window
    _app, window = create_window([])
    window.resize(1280, 800)
    try:
        wait_for(window.engine_ready)
        window.scans.load_dataset([os.path.abspath(args.texts)])
        wait_for(window.scan_finished)
        while not window.start_action.isEnabled():
            wait_for(window.model_ready)          # the text encoder's layer tree for these classes
        settle(500)
        save(window, f"{args.out_dir}/1-data.png")
        window.tabs.setCurrentIndex(1)
        settle(500)
        save(window, f"{args.out_dir}/2-model.png")
        window.train_panel.settings.set_values(epochs=args.epochs)
        window.tabs.setCurrentIndex(2)
        window.start_training()
        wait_for(window.training_finished, 600)
        settle(800)
        save(window, f"{args.out_dir}/3-train.png")
        window.tabs.setCurrentIndex(3)
        settle(800)
        save(window, f"{args.out_dir}/4-results.png")
        window.tabs.setCurrentIndex(4)
        settle(800)
        save(window, f"{args.out_dir}/5-try.png")
    finally:
        window.shutdown()
        window.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(run(lambda: take_screenshots(parse_args())))
