"""Which checkpoint should a run keep by default: the last epoch, or the epoch best on validation?

    .venv/bin/python bench/bench_checkpoint.py DATA [DATA ...] [--seeds 5]

For each dataset (a folder of class folders, a folder with train/ val/ test/, or a CSV of texts) and each
seed, the default recipe is trained twice, `--checkpoint best` and `--checkpoint last`, and both are
measured on the test split. Prints the mean of each and the mean difference (last - best) with its standard
error over seeds; writes bench/out/checkpoint-last-vs-best.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.core.runtime import tune_process  # noqa: E402

tune_process()

import numpy as np  # noqa: E402

from engine.modalities.text.catalog import DEFAULT_TEXT_ENCODER  # noqa: E402
from engine.training.config import TrainConfig  # noqa: E402
from engine.training.datasets import scan_any  # noqa: E402
from engine.training.trainer import Trainer  # noqa: E402


def one_dataset(data: str, seeds: int, tmp: Path) -> list[dict]:
    rows = []
    for seed in range(seeds):
        report = scan_any(data, seed=seed)
        encoder = {"backbone": DEFAULT_TEXT_ENCODER} if report.modality == "text" else {}
        row = {}
        for keep in ("best", "last"):
            config = TrainConfig(seed=seed, checkpoint=keep, **encoder)
            row[keep] = Trainer(report, config, tmp / f"{keep}-{seed}").fit().metrics["test_accuracy"]
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+")
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for data in args.data:
            rows = out[data] = one_dataset(data, args.seeds, Path(tmp) / Path(data).stem)
            gain = [r["last"] - r["best"] for r in rows]
            print(f"{data}: best {np.mean([r['best'] for r in rows]):.4f}  last {np.mean([r['last'] for r in rows]):.4f}"
                  f"  last - best {np.mean(gain):+.4f} ± {np.std(gain, ddof=1) / np.sqrt(len(gain)):.4f}", flush=True)
    (ROOT / "bench" / "out" / "checkpoint-last-vs-best.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
