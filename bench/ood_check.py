"""End to end on held-out kinds: train with the app's defaults, export the verified ONNX file, and measure
what its "unknown" score and calibration do on inputs from new sessions.

Per experiment: `main.py train` on the known classes (fm-sessions: train/val/test photos from different
sessions; fortunes: 60/20/20), `main.py export --onnx`, then the exported file (onnxruntime, as users run
it) scores the known classes' test inputs, the held-out classes' test inputs (near: a kind never taught)
and another domain (far). Printed: test accuracy, test ECE before -> after, AUROC near and far, the share
of known test inputs accepted and of near/far inputs rejected at the run's threshold (95 % of val).

    .venv/bin/python bench/ood_check.py [--out /tmp/ood-check]
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from engine.core.confidence import auroc  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FASHION_HELD = (("shirt", "sandal"), ("pullover", "sneaker"), ("coat", "bag"))


def sh(*args: str) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr)
    return done.stdout


def scores(model: Path, inputs: list[str]) -> np.ndarray:
    from engine.outputs.predict import load_classifier, predict_items
    from engine.core import modality as modalities
    classifier = load_classifier(model)
    modality = modalities.of(classifier.meta)
    items, _ = modality.prediction_items(inputs)
    report = predict_items(classifier, items, modality.prediction_input, top_k=1, batch_size=32)
    return np.array([p.ood_score for p in report.predictions]), report.predictions[0].threshold


def fashion(out: Path):
    far = sorted(glob.glob("/data/elpv4/*/*"))[::8][:300]
    import skimage
    far += [str(p) for p in sorted((Path(skimage.__file__).parent / "data").glob("*"))
            if p.suffix in (".png", ".jpg") and p.stat().st_size > 20000]
    far_dir = out / "far-images"
    far_dir.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(far):
        link = far_dir / f"{i:04d}{Path(path).suffix}"
        if not link.exists():
            link.symlink_to(path)
    for held in FASHION_HELD:
        name = "fashion-" + "+".join(held)
        data = out / name / "data"
        for split in ("train", "val", "test"):
            for folder in sorted(Path(f"/data/fm-sessions/{split}").iterdir()):
                if folder.name not in held:
                    (data / split).mkdir(parents=True, exist_ok=True)
                    link = data / split / folder.name
                    if not link.exists():
                        link.symlink_to(folder)
        near = [str(Path(f"/data/fm-sessions/test/{c}")) for c in held]
        known = [str(folder) for folder in sorted(Path("/data/fm-sessions/test").iterdir()) if folder.name not in held]
        yield name, data, known, near, [str(far_dir)]


def texts(out: Path):
    rows = list(csv.DictReader(open("/data/fortunes8.csv", encoding="utf-8")))
    labels = sorted({r["label"] for r in rows})
    rng = np.random.default_rng(0)
    split = {i: ("train", "val", "test")[int(np.searchsorted([0.6, 0.8], u, side="right"))]
             for i, u in enumerate(rng.random(len(rows)))}
    far = [" ".join(s.split()) for p in sorted(glob.glob("/usr/share/common-licenses/*"))[:6]
           for s in Path(p).read_text(errors="ignore").replace("\n\n", ". ").split(". ")]
    far_file = out / "far-texts.txt"
    far_file.parent.mkdir(parents=True, exist_ok=True)
    far_file.write_text("\n".join([t for t in far if 40 < len(t) < 400][:300]) + "\n", encoding="utf-8")
    for held in (tuple(labels[:2]), tuple(labels[3:5]), tuple(labels[-2:])):
        name = "fortunes-" + "+".join(held)
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        data, known, near = folder / "data.csv", folder / "known-test.txt", folder / "near-test.txt"
        with open(data, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label", "split"])
            writer.writerows((r["text"], r["label"], split[i]) for i, r in enumerate(rows) if r["label"] not in held)
        one_line = [(" ".join(r["text"].split()), r["label"], split[i]) for i, r in enumerate(rows)]
        known.write_text("\n".join(t for t, label, s in one_line if s == "test" and label not in held) + "\n")
        near.write_text("\n".join(t for t, label, s in one_line if s == "test" and label in held) + "\n")
        yield name, data, [str(known)], [str(near)], [str(far_file)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/ood-check")
    parser.add_argument("--sets", default="fashion,texts")
    args = parser.parse_args()
    out = Path(args.out)
    makers = {"fashion": fashion, "texts": texts}
    print(f"{'experiment':32s} {'test acc':>8s} {'ECE before->after':>18s} {'AUROC near':>10s} {'far':>6s} "
          f"{'accept':>7s} {'rej near':>8s} {'rej far':>7s}")
    for kind in args.sets.split(","):
        for name, data, known, near, far in makers[kind](out):
            run = out / name / "run"
            if not (run / "metrics.json").exists():
                sh("train", str(data), "--out", str(run))
            model = out / name / "model.onnx"
            sh("export", str(run), "--onnx", str(model))
            metrics = json.loads((run / "metrics.json").read_text())
            calibration = metrics["calibration"]
            known_scores, threshold = scores(model, known)
            near_scores, _ = scores(model, near)
            far_scores, _ = scores(model, far)
            print(f"{name:32s} {metrics['test_accuracy']:8.1%} "
                  f"{calibration['test_ece_before']:8.3f} -> {calibration['test_ece_after']:.3f} "
                  f"{auroc(known_scores, near_scores):10.3f} {auroc(known_scores, far_scores):6.3f} "
                  f"{(known_scores <= threshold).mean():7.1%} {(near_scores > threshold).mean():8.1%} "
                  f"{(far_scores > threshold).mean():7.1%}", flush=True)


if __name__ == "__main__":
    main()
