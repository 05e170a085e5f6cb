"""Does the automatic recipe search beat the defaults, and does `assess` rank backbones right?

    .venv/bin/python bench/bench_search.py DATA [--budget 15m] [--rank] [--seed 0]

On one dataset folder (real images: e.g. ELPV defect4 from ../shared/data/elpv_folder.py, Fashion-MNIST
from ../shared/data/fashion_mnist_folder.py), with the app's seeded 70/15/15 split, measured on the test
split that no choice sees:
1. today's head-only default (TrainConfig()) and a linear probe (multinomial logistic regression on the
   same frozen Lite0 features, trained on train + val, L2 strength chosen by 5-fold CV): the baselines;
2. `--auto` within the budget: test accuracy, wall time, time per phase, the winner;
3. with --rank: every backbone's assessment (LogME, CV probe) and its fine-tuned accuracy (last 2 blocks,
   lr 1e-3, 10 epochs on cached activations, test split), with Spearman's rank correlation between each
   score and the fine-tuned accuracy.
Prints a table and writes it as JSON next to the run folders (bench/out/NAME.json).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.core.runtime import tune_process  # noqa: E402

tune_process()          # as main.py does, before torch loads: idle OpenMP threads sleep instead of spinning

import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine.data.scan import scan_dataset  # noqa: E402
from engine.search.assess import assess_backbones, backbone_features, pretrained  # noqa: E402
from engine.search.auto import RecipeSearch, parse_budget  # noqa: E402
from engine.search.crossval import PROBE_PENALTIES, stratified_folds  # noqa: E402
from engine.training.caches import FeatureCache, view_id, view_transform  # noqa: E402
from engine.training.config import TrainConfig  # noqa: E402
from engine.training.trainer import Trainer  # noqa: E402


def spearman(a: list[float], b: list[float]) -> float:
    ranks = lambda v: np.argsort(np.argsort(v)).astype(float)   # noqa: E731 - no ties in practice
    ra, rb = ranks(np.asarray(a)), ranks(np.asarray(b))
    return float(np.corrcoef(ra, rb)[0, 1]) if len(a) > 1 else float("nan")


def linear_probe_test(report, seed: int) -> float:
    """The 20-line script's accuracy: logistic regression on frozen Lite0 features of train + val, the L2
    strength chosen by 5-fold CV, scored on the test split."""
    from engine.search.crossval import _probe_fold, _probe_penalty
    bundle = pretrained(report, "efficientnet_lite0")
    data = backbone_features(report, bundle, ("plain",), seed)
    folds = stratified_folds(data.labels, 5, seed)
    best = max(PROBE_PENALTIES, key=lambda p: _probe_penalty(data.views[0], data.labels, folds, p, None)[0])
    test = report.split("test")
    pre = bundle.preprocessing
    x_test = FeatureCache(bundle.model).features([s.path for s in test], [s.label for s in test],
                                                 report.content_hash, [view_transform(pre, "plain")],
                                                 view_id(pre, "plain"), seed)[0]
    return _probe_fold(data.views[0], data.labels, x_test, np.array([s.label for s in test]), best)


def recipe_summary(config: dict) -> dict:
    """The winner's main choices (each member's, for an ensemble)."""
    if "ensemble" in config:
        return {"ensemble": [recipe_summary(member) for member in config["ensemble"]]}
    return {k: config[k] for k in ("backbone", "head", "lr", "weight_decay", "label_smoothing", "epochs",
                                   "augmentation", "tta", "freeze", "freeze_blocks", "seed")}


def timed_fit(report, config: TrainConfig, folder: Path) -> tuple[float, float]:
    began = time.monotonic()
    result = Trainer(report, config, folder).fit()
    return result.metrics["test_accuracy"], time.monotonic() - began


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--budget", default="15m")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rank", action="store_true", help="also fine-tune every backbone for the rank correlation")
    ap.add_argument("--skip-auto", action="store_true")
    ap.add_argument("--skip-baselines", action="store_true", help="only the search (and --rank)")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    report = scan_dataset(args.data, seed=args.seed)
    name = Path(args.data).name
    rows: dict = {"dataset": name, "counts": {k: sum(v.values()) for k, v in report.counts().items()}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not args.skip_baselines:
            rows["default head-only"] = dict(zip(("test_accuracy", "seconds"),
                                                 timed_fit(report, TrainConfig(), tmp / "d")))
            began = time.monotonic()
            rows["linear probe (Lite0, CV'd L2)"] = {"test_accuracy": linear_probe_test(report, args.seed),
                                                   "seconds": time.monotonic() - began}
        if not args.skip_auto:
            began = time.monotonic()
            result = RecipeSearch(report, tmp / "auto", parse_budget(args.budget), TrainConfig(seed=args.seed)).run()
            search = json.loads((tmp / "auto" / "search.json").read_text())
            rows[f"--auto {args.budget}"] = {"test_accuracy": result.metrics.get("test_accuracy"),
                                             "val_accuracy": result.metrics.get("val_accuracy"),
                                             "seconds": time.monotonic() - began, "winner": result.winner,
                                             "recipe": recipe_summary(result.config),
                                             "phases_s": search["phases_s"]}
            rows["assessments"] = search["assessments"]
            rows["leaderboard"] = [{k: c[k] for k in ("name", "backbone", "score", "scored_by", "val_accuracy",
                                                      "seconds", "status", "note")}
                                   for c in result.leaderboard if not c["name"].startswith("head trial")]
            rows["head trials"] = sum(c["name"].startswith("head trial") for c in result.leaderboard)
        if args.rank:
            assessments = assess_backbones(report, seed=args.seed)
            tuned = {}
            for a in assessments:
                config = TrainConfig(backbone=a.backbone, freeze="last-n", freeze_blocks=2, lr=1e-3, seed=args.seed)
                tuned[a.backbone] = dict(zip(("test_accuracy", "seconds"), timed_fit(report, config, tmp / a.backbone)))
            order = [a.backbone for a in assessments]
            fine = [tuned[b]["test_accuracy"] for b in order]
            rows["assessment"] = [{**{k: v for k, v in a.to_dict().items() if k in (
                "backbone", "logme", "probe_accuracy", "probe_std", "fit", "ms_per_image", "seconds")},
                "fine_tuned_last2": tuned[a.backbone]} for a in assessments]
            rows["spearman(probe, fine-tuned)"] = spearman([a.probe_accuracy for a in assessments], fine)
            rows["spearman(LogME, fine-tuned)"] = spearman([a.logme for a in assessments], fine)
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / f"search-{name}{'-rank' if args.rank else ''}.json").write_text(json.dumps(rows, indent=2))
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
