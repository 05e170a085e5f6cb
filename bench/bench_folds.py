"""Is cross-validation inside the training images honest about new images? Random folds against folds that
keep near-identical images together (engine.training.folds), next to the validation and test splits.

    .venv/bin/python bench/bench_folds.py DATA [DATA ...] [--share 0.3] [--backbone efficientnet_lite0]

For each dataset (class folders, or train/ val/ test/ folders such as bench/shifted_sets.py writes): the
frozen features of every split, then the fitted head (logistic regression, L2 chosen as the app chooses
it) scored four ways: 5-fold cross-validation inside the training images with random stratified folds,
the same with grouped folds, and trained on the training images, scored on the validation and on the test
images. A cross-validation estimate is honest when it lands near the test figure. With several --share
values, the grouping rule's threshold is varied (0.3 is the app's). Writes bench/out/folds.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.core.runtime import tune_process  # noqa: E402

tune_process()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine.data.scan import scan_dataset  # noqa: E402
from engine.search.assess import pretrained, split_views  # noqa: E402
from engine.training.caches import FeatureCache  # noqa: E402
from engine.training.folds import near_duplicate_groups, stratified_folds  # noqa: E402
from engine.training.logistic import PENALTIES, cross_validated, fit_head, one_standard_error_choice  # noqa: E402


def features(data: str, backbone: str) -> dict:
    report = scan_dataset(data, seed=0)
    bundle = pretrained(report, backbone)
    cache = FeatureCache(bundle.model)
    return {split: (split_views(cache, report.split(split), report, bundle, ("plain",), 0, None, None)[0],
                    np.array([s.label for s in report.split(split)])) for split in ("train", "val", "test")}, \
        len(report.classes)


def cv_accuracy(x: torch.Tensor, y: np.ndarray, classes: int, folds: np.ndarray) -> float:
    """Held-out accuracy of the fitted head's cross-validation over `folds`, at the penalty the
    one-standard-error rule picks on them."""
    scaled = ((x - x.mean(0)) / x.std(0).clamp_min(1e-6))[None]
    by_penalty = cross_validated(scaled, y, folds, classes, None, False, None)
    return by_penalty[one_standard_error_choice(by_penalty, len(y))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="+")
    ap.add_argument("--share", default="0.3", help="comma-separated NEAR_SHARE values to try")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    args = ap.parse_args()
    rows = []
    for data in args.data:
        splits, classes = features(data, args.backbone)
        (x, y), (xv, yv), (xt, yt) = splits["train"], splits["val"], splits["test"]
        head = fit_head(x[None], y, classes)
        score = lambda a, b: float(((a @ head.weight.T + head.bias).argmax(1).numpy() == b).mean())  # noqa: E731
        row = {"dataset": Path(data).name, "train": len(y), "val": len(yv), "test": len(yt),
               "random folds": cv_accuracy(x, y, classes, stratified_folds(y, 5, 0)),
               "validation": score(xv, yv) if len(yv) else None, "test accuracy": score(xt, yt) if len(yt) else None,
               "penalties": list(PENALTIES)}
        for share in (float(s) for s in args.share.split(",")):
            groups = near_duplicate_groups(x, y, share=share)
            sizes = np.bincount(groups)
            row[f"grouped folds (share {share})"] = cv_accuracy(x, y, classes, stratified_folds(y, 5, 0, groups))
            row[f"groups (share {share})"] = {"grouped samples": int(sizes[sizes > 1].sum()),
                                              "groups of 2+": int((sizes > 1).sum()), "largest": int(sizes.max())}
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "folds.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
