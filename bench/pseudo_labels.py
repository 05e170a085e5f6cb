"""Pseudo-labels on and off (engine.active.pseudo), simulated on real sets: a few labels per class from the
training split, the rest of it the unlabelled pool (its labels hidden), the threshold chosen on the set's
validation split, test accuracy of the head on the set's test split (fm-sessions: other sessions).

    python bench/pseudo_labels.py [--sets fm-sessions,elpv4,fortunes8] [--per-class 5,20] [--seeds 3]

"off": a head on the labels alone. "app": what `train --unlabelled` does (a threshold only when it beats off
on validation by more than chance, else off). "0.9 always": a fixed threshold, for comparison. Writes
bench/out/pseudo-labels.json and prints the table.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from active_learning import SETS, features_of  # noqa: E402
from common import ROOT, machine  # noqa: E402

from engine.active.pseudo import balanced_weights, choose_pseudo_labels  # noqa: E402
from engine.training.logistic import fit_head  # noqa: E402


def test_accuracy(features, labels, train, extra, test, classes, seed) -> float:
    """The head as `train --unlabelled` would fit it: labels plus pseudo-labels, classes weighed alike."""
    x = np.concatenate([features[train], features[[i for i, _ in extra]]]) if extra else features[train]
    y = np.concatenate([labels[train], np.array([c for _, c in extra], dtype=int)]) if extra else labels[train]
    head = fit_head(torch.from_numpy(x).float()[None], y, classes, seed=seed,
                    class_weight=balanced_weights(y, classes) if extra else None)
    logits = torch.from_numpy(features[test]).float() @ head.weight.T + head.bias
    return float((logits.argmax(1).numpy() == labels[test]).mean())


def run(features, labels, splits, classes, per_class, seed) -> dict:
    rng = np.random.default_rng(seed)
    train = np.flatnonzero(splits == "train")
    labelled = np.array([i for c in range(classes) for i in rng.permutation(train[labels[train] == c])[:per_class]])
    pool = np.setdiff1d(train, labelled)
    val, test = np.flatnonzero(splits == "val"), np.flatnonzero(splits == "test")
    choice = choose_pseudo_labels((features[labelled], labels[labelled]), (features[val], labels[val]),
                                  features[pool], classes, seed=seed)
    chosen = [(int(pool[i]), c) for i, c in choice.labels]
    off = test_accuracy(features, labels, labelled, [], test, classes, seed)
    result = {"off": off, "app": test_accuracy(features, labels, labelled, chosen, test, classes, seed) if chosen else off,
              "threshold": choice.threshold, "pseudo_labels": len(chosen),
              "pseudo_label_accuracy": float(np.mean([labels[i] == c for i, c in chosen])) if chosen else None,
              "candidates": choice.candidates}
    confident = _confident(features, labels, labelled, val, pool, classes, seed, 0.9)
    result["0.9 always"] = test_accuracy(features, labels, labelled, confident, test, classes, seed)
    return result


def _confident(features, labels, labelled, val, pool, classes, seed, threshold):
    """Every pool sample at or above `threshold` (calibrated on validation), whatever validation says."""
    from engine.models.trust import fit_temperature
    head = fit_head(torch.from_numpy(features[labelled]).float()[None], labels[labelled], classes, seed=seed)
    val_logits = torch.from_numpy(features[val]).float() @ head.weight.T + head.bias
    temperature = fit_temperature(val_logits, torch.from_numpy(labels[val]))
    probabilities = ((torch.from_numpy(features[pool]).float() @ head.weight.T + head.bias) / temperature).softmax(1)
    confidence, guess = probabilities.max(1)
    return [(int(pool[i]), int(guess[i])) for i in np.flatnonzero(confidence.numpy() >= threshold)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--per-class", default="5,20")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "pseudo-labels.json"))
    args = parser.parse_args()
    print(machine(), flush=True)
    found = {}
    for set_name in args.sets.split(","):
        features, labels, splits, classes = features_of(set_name)
        for per_class in (int(n) for n in args.per_class.split(",")):
            runs = [run(features, labels, splits, classes, per_class, seed) for seed in range(args.seeds)]
            found[f"{set_name}/{per_class}"] = {"set": set_name, "per_class": per_class, "runs": runs}
            print(set_name, per_class, json.dumps({k: [r[k] for r in runs] for k in ("off", "app", "0.9 always",
                                                                                  "threshold", "pseudo_labels")}),
                  flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": machine(), "args": vars(args), "results": found}, indent=2)
                              + "\n", encoding="utf-8")
    print("| set | labels per class | off | app (threshold by validation) | 0.9 always | seeds the app turned it on |")
    print("|---|---|---|---|---|---|")
    for result in found.values():
        runs = result["runs"]
        mean = {k: 100 * np.mean([r[k] for r in runs]) for k in ("off", "app", "0.9 always")}
        on = sum(r["threshold"] is not None for r in runs)
        print(f"| {result['set']} | {result['per_class']} | {mean['off']:.1f} | {mean['app']:.1f} | "
              f"{mean['0.9 always']:.1f} | {on} of {len(runs)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
