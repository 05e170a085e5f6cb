"""Does the automatic recipe search hand back at least the default recipe on data it has never seen, and
does `assess` rank backbones right?

    .venv/bin/python bench/bench_search.py DATA [--budget 15m] [--seeds 0,1,2] [--name NAME] [--rank]

DATA is any dataset `main.py train` takes: a folder of class folders (the app's seeded 70/15/15 split, the
seed changing the split), a folder with train/ val/ test/ (its own split: bench/shifted_sets.py writes sets
whose splits come from different conditions; the seed then changes only the training), or a CSV of texts.
For each seed, measured on the test split that no choice sees:
1. the default recipe (`TrainConfig()`, head only, its last epoch kept; again keeping the epoch best on
   validation, `--checkpoint best`) and the fitted head (`--optimizer lbfgs`): the baselines;
2. `--auto` within the budget: test accuracy, wall time, time per phase, the winner, why it won, the warnings.
The summary gives each one's mean test accuracy, the search's mean gain over the default with its standard
error over seeds, and whether the search is at least the default minus one standard error of the default's
test accuracy (binomial) on every seed: the issue's bar. With --rank: every backbone's assessment and its
fine-tuned accuracy (last 2 blocks, lr 1e-3, 10 epochs on cached activations), with Spearman's rank
correlation. Writes bench/out/search-NAME.json.
"""
from __future__ import annotations

import argparse
import json
import math
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

from engine.modalities.text.catalog import DEFAULT_TEXT_ENCODER  # noqa: E402
from engine.search.assess import assess_backbones  # noqa: E402
from engine.search.auto import RecipeSearch, parse_budget  # noqa: E402
from engine.modalities.text.search import TextRecipeSearch  # noqa: E402
from engine.training.config import TrainConfig  # noqa: E402
from engine.training.datasets import scan_any  # noqa: E402
from engine.training.trainer import Trainer  # noqa: E402


def spearman(a: list[float], b: list[float]) -> float:
    ranks = lambda v: np.argsort(np.argsort(v)).astype(float)   # noqa: E731 - no ties in practice
    ra, rb = ranks(np.asarray(a)), ranks(np.asarray(b))
    return float(np.corrcoef(ra, rb)[0, 1]) if len(a) > 1 else float("nan")


def recipe_summary(config: dict) -> dict:
    """The winner's main choices (each member's, for an ensemble)."""
    if "ensemble" in config:
        return {"ensemble": [recipe_summary(member) for member in config["ensemble"]]}
    return {k: config.get(k) for k in ("backbone", "head", "optimizer", "lr", "weight_decay", "label_smoothing",
                                       "epochs", "augmentation", "tta", "freeze", "freeze_blocks", "seed")}


def timed_fit(report, config: TrainConfig, folder: Path) -> dict:
    began = time.monotonic()
    result = Trainer(report, config, folder).fit()
    return {"val_accuracy": result.metrics["val_accuracy"], "test_accuracy": result.metrics["test_accuracy"],
            "seconds": round(time.monotonic() - began, 1)}


def one_seed(data: str, seed: int, budget: float, budget_text: str, tmp: Path, skip_auto: bool) -> dict:
    report = scan_any(data, seed=seed)
    text = report.modality == "text"
    encoder = {"backbone": DEFAULT_TEXT_ENCODER} if text else {}
    row: dict = {"seed": seed, "counts": {k: sum(v.values()) for k, v in report.counts().items()}}
    row["default"] = timed_fit(report, TrainConfig(seed=seed, **encoder), tmp / f"default-{seed}")
    row["default, best epoch"] = timed_fit(report, TrainConfig(seed=seed, checkpoint="best", **encoder),
                                           tmp / f"best-{seed}")
    row["fitted head"] = timed_fit(report, TrainConfig(seed=seed, optimizer="lbfgs", **encoder), tmp / f"lbfgs-{seed}")
    if skip_auto:
        return row
    search = TextRecipeSearch if text else RecipeSearch
    began = time.monotonic()
    result = search(report, tmp / f"auto-{seed}", budget, TrainConfig(seed=seed, **encoder)).run()
    report_json = json.loads((tmp / f"auto-{seed}" / "search.json").read_text())
    row[f"--auto {budget_text}"] = {
        "test_accuracy": result.metrics.get("test_accuracy"), "val_accuracy": result.metrics.get("val_accuracy"),
        "seconds": round(time.monotonic() - began, 1), "winner": result.winner, "decision": result.decision,
        "warnings": result.warnings, "notes": report_json.get("notes", []), "recipe": recipe_summary(result.config),
        "phases_s": report_json["phases_s"]}
    row["finalists"] = [{k: c.get(k) for k in ("name", "backbone", "score", "interval", "screening", "seconds",
                                              "status", "note")} | {"p": (c.get("comparison") or {}).get("p_value")}
                        for c in result.leaderboard if c["stage"] == "final"]
    row["head trials"] = sum(c["name"].startswith("head trial") for c in result.leaderboard)
    return row


def summarize(rows: list[dict], auto_key: str) -> dict:
    """Means over seeds, the search's gain over the default (mean, standard error over seeds), and the bar:
    on every seed the search's test accuracy is at least the default's minus one binomial standard error."""
    tests = rows[0]["counts"]["test"]
    summary = {name: round(float(np.mean([r[name]["test_accuracy"] for r in rows])), 4)
               for name in ("default", "default, best epoch", "fitted head", auto_key) if all(name in r for r in rows)}
    if auto_key in summary:
        gains = [r[auto_key]["test_accuracy"] - r["default"]["test_accuracy"] for r in rows]
        summary["gain over default"] = round(float(np.mean(gains)), 4)
        summary["gain standard error"] = round(float(np.std(gains, ddof=1) / math.sqrt(len(gains))), 4) \
            if len(gains) > 1 else None
        summary["at least default - 1 SE on every seed"] = all(
            r[auto_key]["test_accuracy"] >= r["default"]["test_accuracy"] -
            math.sqrt(r["default"]["test_accuracy"] * (1 - r["default"]["test_accuracy"]) / tests) for r in rows)
        summary["winners"] = [r[auto_key]["winner"] for r in rows]
    return summary


def rank(data: str, seed: int, tmp: Path) -> dict:
    report = scan_any(data, seed=seed)
    assessments = assess_backbones(report, seed=seed)
    tuned = {a.backbone: timed_fit(report, TrainConfig(backbone=a.backbone, freeze="last-n", freeze_blocks=2,
                                                       lr=1e-3, seed=seed), tmp / a.backbone)
             for a in assessments}
    fine = [tuned[a.backbone]["test_accuracy"] for a in assessments]
    return {"assessment": [{**{k: v for k, v in a.to_dict().items() if k in (
                "backbone", "logme", "probe_accuracy", "probe_interval", "cv_accuracy", "shifted", "fit",
                "ms_per_image", "seconds")}, "fine_tuned_last2": tuned[a.backbone]} for a in assessments],
            "spearman(probe, fine-tuned)": spearman([a.probe_accuracy for a in assessments], fine),
            "spearman(LogME, fine-tuned)": spearman([a.logme for a in assessments], fine)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--budget", default="15m")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--name", default=None, help="name of the JSON file (default: the dataset's)")
    ap.add_argument("--rank", action="store_true", help="also fine-tune every backbone for the rank correlation")
    ap.add_argument("--skip-auto", action="store_true")
    args = ap.parse_args()
    name = args.name or Path(args.data).stem
    seeds = [int(s) for s in args.seeds.split(",")]
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    auto_key = f"--auto {args.budget}"
    result: dict = {"dataset": name, "budget": args.budget, "seeds": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            torch.manual_seed(seed)
            result["seeds"].append(one_seed(args.data, seed, parse_budget(args.budget), args.budget, Path(tmp),
                                            args.skip_auto))
            result["summary"] = summarize(result["seeds"], auto_key)
            (out / f"search-{name}.json").write_text(json.dumps(result, indent=2))
            print(json.dumps(result["seeds"][-1], indent=1), flush=True)
        if args.rank:
            result["rank"] = rank(args.data, seeds[0], Path(tmp))
    (out / f"search-{name}{'-rank' if args.rank else ''}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
