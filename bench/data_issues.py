"""Not a timing: how well the deep check (engine.audit, `main.py inspect DATA --deep`) finds what was planted
in real data, and what it costs.

    python bench/data_issues.py [--sets fmnist,fm-sessions,elpv,fortunes] [--noise 0.05,0.1,0.2]
                                [--copies 100] [--seeds 0,1] [--timing 2000,20000]

- Label errors: a share of the *training* labels moved to another class at random (seeded), then the app's
  out-of-fold probabilities (frozen features, grouped 5-fold logistic regression) and confident learning.
  Reported over the training samples: precision of the top k by self-confidence (k = the number moved: the
  issue's measure), precision and recall of the flagged set, and cleanlab's own `find_label_issues` on the same
  probabilities (default filter and 'confident_learning') for reference.
- Near-copies: `--copies` test samples copied into train: images cropped 3-8 %, resized 0.6-1.6x and
  re-encoded as JPEG (quality 50-90); texts with case, spacing and punctuation changed and a word dropped. The
  whole deep check runs on the planted set; reported: planted pairs found across splits (recall) and how many
  other pairs and samples it flags (real look-alikes and real duplicates among them).
- Time: the whole deep check (a cold cache: the frozen pass included) on N Fashion-MNIST photos.
Writes bench/out/data-issues.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import machine  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine.audit.deep import inspect_deep  # noqa: E402
from engine.audit.duplicates import nearest, unit_rows  # noqa: E402
from engine.audit.labels import VOTERS, label_issue_mask, label_probabilities, self_confidence  # noqa: E402
from engine.core import modality as modalities  # noqa: E402

SETS = {"fmnist": "/data/fmnist", "fm-sessions": "/data/fm-sessions", "elpv": "/data/elpv4",
        "fortunes": "/data/fortunes8.csv"}
WORK = Path(tempfile.gettempdir()) / "transferlab-bench" / "data-issues"


def scan(source: str):
    return modalities.for_source(source).scan(source, seed=0)


def label_noise(name: str, source: str, rates: list[float], seeds: list[int]) -> list[dict]:
    report = scan(source)
    modality = modalities.of(report)
    features = modality.frozen_features(report, report.samples, modality.default_backbone)
    labels = np.array([s.label for s in report.samples])
    train = np.array([s.split == "train" for s in report.samples])
    neighbours = nearest(unit_rows(features), VOTERS)[1]
    rows = []
    for rate in rates:
        for seed in seeds:
            rng = np.random.default_rng(seed)
            noisy = labels.copy()
            moved = rng.choice(np.flatnonzero(train), round(rate * train.sum()), replace=False)
            for i in moved:
                noisy[i] = rng.choice([c for c in range(len(report.classes)) if c != labels[i]])
            truth = np.zeros(len(labels), bool)
            truth[moved] = True
            began = time.monotonic()
            probs, fitted = label_probabilities(features, neighbours, noisy, np.arange(len(noisy)),
                                                len(report.classes), seed)
            seconds = time.monotonic() - began
            flagged = label_issue_mask(noisy, probs) & train
            confidence = self_confidence(noisy, probs)
            order = np.flatnonzero(train)[np.argsort(confidence[train], kind="stable")]
            top = order[:len(moved)]
            row = {"set": name, "rate": rate, "seed": seed, "train": int(train.sum()), "moved": len(moved),
                   "top_k_precision": round(float(truth[top].mean()), 4),
                   "flagged": int(flagged.sum()),
                   "flagged_precision": round(float(truth[flagged].mean()), 4) if flagged.any() else None,
                   "flagged_recall": round(float(flagged[truth].mean()), 4), "penalty": fitted.penalty,
                   "seconds": round(seconds, 1)}
            row.update(cleanlab_reference(noisy, probs, truth, train))
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def cleanlab_reference(noisy, probs, truth, train) -> dict:
    try:
        from cleanlab.filter import find_label_issues
    except ImportError:
        return {}
    out = {}
    for how in ("prune_by_noise_rate", "confident_learning"):
        mask = find_label_issues(noisy, probs, filter_by=how) & train
        out[f"cleanlab_{how}"] = {"flagged": int(mask.sum()),
                                  "precision": round(float(truth[mask].mean()), 4) if mask.any() else None,
                                  "recall": round(float(mask[truth].mean()), 4)}
    return out


# -- planted near-copies ------------------------------------------------------------------------------
def plant_images(source: str, out: Path, count: int, seed: int) -> dict[str, str]:
    from PIL import Image
    report = scan(source)
    rng = random.Random(seed)
    if out.exists():
        shutil.rmtree(out)
    rows, planted = [], {}
    for sample in report.samples:
        rows.append((sample.path, report.classes[sample.label], sample.split))
    for n, sample in enumerate(rng.sample(report.split("test"), count)):
        image = Image.open(sample.path).convert("RGB")
        w, h = image.size
        cut = rng.uniform(0.03, 0.08)
        cw, ch = round(w * cut), round(h * cut)
        left, top = rng.randint(0, cw), rng.randint(0, ch)
        image = image.crop((left, top, w - (cw - left), h - (ch - top)))
        scale = rng.uniform(0.6, 1.6)
        image = image.resize((max(8, round(image.width * scale)), max(8, round(image.height * scale))),
                             Image.BICUBIC)
        target = out / "planted" / f"copy_{n}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target, quality=rng.randint(50, 90))
        rows.append((str(target), report.classes[sample.label], "train"))
        planted[str(target)] = sample.path
    with open(out / "data.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split"])
        writer.writerows(rows)
    return planted


def plant_texts(source: str, out: Path, count: int, seed: int) -> dict[str, str]:
    rng = random.Random(seed)
    report = scan(source)
    out.mkdir(parents=True, exist_ok=True)
    rows = [(s.text, report.classes[s.label], s.split) for s in report.samples]
    test = [i for i, s in enumerate(report.samples) if s.split == "test"]
    planted = {}
    for i in rng.sample(test, count):
        words = rows[i][0].split()
        if len(words) > 4:
            del words[rng.randrange(len(words))]
        text = " ".join(words).upper() if rng.random() < 0.3 else "  ".join(words)
        text = text.rstrip(".!?") + rng.choice(["", ".", "!"])
        rows.append((text, rows[i][1], "train"))
        planted[text] = rows[i][0]
    with open(out / "data.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label", "split"])
        writer.writerows(rows)
    return planted


def near_copies(name: str, source: str, count: int, seed: int) -> dict:
    out = WORK / f"planted-{name}"
    is_text = source.endswith(".csv")
    planted = (plant_texts if is_text else plant_images)(source, out, count, seed)
    report = scan(str(out / "data.csv"))
    began = time.monotonic()
    deep = inspect_deep(report, seed=seed)
    seconds = time.monotonic() - began
    if is_text:   # texts -> their samples' paths ('data.csv:row N')
        path_of = {s.text: s.path for s in report.samples}
        planted = {path_of[a]: path_of[b] for a, b in planted.items()}
    found = {frozenset((d.a, d.b)) for d in deep.near_duplicates if d.across_splits}
    true = {frozenset(pair) for pair in planted.items()}
    other = [d for d in deep.near_duplicates if frozenset((d.a, d.b)) not in true]
    row = {"set": name, "planted": len(true), "found_across_splits": len(true & found),
           "recall": round(len(true & found) / len(true), 4), "other_pairs": len(other),
           "other_pairs_across_splits": sum(d.across_splits for d in other),
           "other_samples": len({p for d in other for p in (d.a, d.b)}), "samples": len(report.samples),
           "seconds": round(seconds, 1)}
    print(json.dumps(row), flush=True)
    return row


def timing(count: int) -> dict:
    """The whole deep check on `count` Fashion-MNIST photos (96 px), with an empty cache."""
    folder = WORK / f"fmnist-{count}"
    if not folder.exists():
        import subprocess
        subprocess.run([sys.executable, str(Path(__file__).resolve().parent.parent.parent / "shared" / "data" /
                                            "fashion_mnist_folder.py"), str(folder), "--per-class",
                        str(count // 10), "--size", "96"], check=True)
    os.environ["TRANSFERLAB_CACHE_DIR"] = tempfile.mkdtemp(prefix="deep-timing-")
    report = scan(str(folder))
    stages: dict[str, float] = {}
    began = time.monotonic()

    def progress(stage, done, total):
        stages.setdefault(stage, time.monotonic() - began)
    deep = inspect_deep(report, progress=progress)
    row = {"images": len(report.samples), "seconds": round(time.monotonic() - began, 1),
           "stage_started_s": {k: round(v, 1) for k, v in stages.items()}, "summary": deep.summary()}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="fmnist,fm-sessions,elpv,fortunes")
    parser.add_argument("--noise", default="0.05,0.1,0.2")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--copies", type=int, default=100)
    parser.add_argument("--timing", default="2000,20000")
    parser.add_argument("--skip", default="", help="comma-separated: labels, copies, timing")
    args = parser.parse_args()
    print(machine())
    skip = set(filter(None, args.skip.split(",")))
    result = {"labels": [], "copies": [], "timing": []}
    sets = [s for s in args.sets.split(",") if s]
    seeds = [int(s) for s in args.seeds.split(",")]
    for name in sets:
        if "labels" not in skip:
            result["labels"] += label_noise(name, SETS[name], [float(r) for r in args.noise.split(",")], seeds)
        if "copies" not in skip and name != "elpv":
            result["copies"].append(near_copies(name, SETS[name], args.copies, 0))
    if "copies" not in skip and "elpv" in sets:
        result["copies"].append(near_copies("elpv-m2p", "/data/elpv-m2p", args.copies, 0))
    if "timing" not in skip:
        result["timing"] = [timing(int(n)) for n in args.timing.split(",") if n]
    out = Path(__file__).resolve().parent / "out" / "data-issues.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"-> {out}")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
