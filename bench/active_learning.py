"""Simulated labelling: does the app's choice of what to label next (engine.active.acquire) teach more than
random choice, for the same number of labels? Real sets, frozen features of the default model, a head
solved on the labels so far (engine.training.logistic.fit_head, its L2 strength by cross-validation).

    python bench/active_learning.py [--sets fm-sessions,elpv4,fortunes8] [--seeds 3] [--start 2] [--rounds 5] [--batch 20]

Each seed starts from `--start` labelled samples per class drawn from the training split (the pool), then
`--rounds` rounds of `--batch` labels chosen by each strategy: random, margin alone (the least certain),
and the app's (margin + diversity). Test accuracy after each round, on the set's test split (fm-sessions:
other sessions). Writes bench/out/active-learning.json and prints the table.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine  # noqa: E402

from engine.active.acquire import choose_batch, typical_batch  # noqa: E402
from engine.active.suggest import LOW_BUDGET_PER_CLASS  # noqa: E402
from engine.core import modality as modalities  # noqa: E402
from engine.training.datasets import scan_any  # noqa: E402
from engine.training.logistic import fit_head  # noqa: E402

SETS = {"fm-sessions": Path("/data/fm-sessions"), "elpv4": Path("/data/elpv4"),
        "fortunes8": Path("/data/fortunes8.csv")}
STRATEGIES = ("random", "margin", "app", "typiclust", "suggest")   # suggest: what `suggest` does (the switch)


def features_of(set_name: str):
    report = scan_any(SETS[set_name], seed=0)
    modality = modalities.of(report)
    samples = list(report.samples)
    features = modality.frozen_features(report, samples, modality.default_backbone).numpy()
    labels = np.array([s.label for s in samples])
    splits = np.array([s.split for s in samples])
    usable = np.isfinite(features).all(1)
    return features[usable], labels[usable], splits[usable], len(report.classes)


def simulate(features, labels, splits, classes, strategy, seed, start, rounds, batch) -> list[float]:
    rng = np.random.default_rng(seed)
    pool = np.flatnonzero(splits == "train")
    test = np.flatnonzero(splits == "test")
    if not len(test):
        test = np.flatnonzero(splits == "val")
    labelled = [int(i) for c in range(classes) for i in rng.permutation(pool[labels[pool] == c])[:start]]
    scaled = torch.from_numpy((features - features[pool].mean(0)) / (features[pool].std(0) + 1e-6)).float()
    accuracies = []
    for round_ in range(rounds + 1):
        head = fit_head(scaled[labelled][None], labels[labelled], classes, seed=seed)
        logits = scaled @ head.weight.T + head.bias
        accuracies.append(float((logits[test].argmax(1).numpy() == labels[test]).mean()))
        if round_ == rounds:
            break
        rest = np.setdiff1d(pool, labelled)
        if strategy == "suggest":         # typicality below the budget, then margin + diversity
            strategy_now = "typiclust" if len(labelled) < LOW_BUDGET_PER_CLASS * classes else "app"
        else:
            strategy_now = strategy
        if strategy_now == "random":
            picked = rng.choice(rest, size=min(batch, len(rest)), replace=False)
        elif strategy_now == "typiclust":
            marked = np.zeros(len(pool), dtype=bool)
            marked[np.searchsorted(pool, labelled)] = True
            picked = pool[typical_batch(features[pool], marked, batch, seed=seed)]
        else:
            probabilities = logits[rest].softmax(1).numpy()
            if strategy_now == "margin":
                top = np.sort(probabilities, 1)
                picked = rest[np.argsort(top[:, -1] - top[:, -2])[:batch]]
            else:
                picked = rest[[s.index for s in choose_batch(features[rest], probabilities, batch, seed=seed)]]
        labelled += [int(i) for i in picked]
    return accuracies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--start", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "active-learning.json"))
    args = parser.parse_args()
    print(machine(), flush=True)
    strategies = args.strategies.split(",")
    found = {}
    for set_name in args.sets.split(","):
        features, labels, splits, classes = features_of(set_name)
        curves = {strategy: np.array([simulate(features, labels, splits, classes, strategy, seed, args.start,
                                               args.rounds, args.batch) for seed in range(args.seeds)])
                  for strategy in strategies}
        found[set_name] = {"classes": classes, "start_labels": args.start * classes,
                           **{s: {"mean": c.mean(0).round(4).tolist(), "per_seed": c.round(4).tolist()}
                              for s, c in curves.items()}}
        print(set_name, json.dumps({s: found[set_name][s]["mean"] for s in strategies}), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": machine(), "args": vars(args), "sets": found}, indent=2) + "\n",
                              encoding="utf-8")
    print("| set | labels | " + " | ".join(strategies) + " |")
    print("|---|---|" + "---|" * len(strategies))
    for set_name, result in found.items():
        for round_ in range(args.rounds + 1):
            used = result["start_labels"] + round_ * args.batch
            print(f"| {set_name} | {used} | " + " | ".join(f"{100 * result[s]['mean'][round_]:.1f}"
                                                        for s in strategies) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
