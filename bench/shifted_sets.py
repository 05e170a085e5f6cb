"""Write the datasets whose train, validation and test splits come from different conditions, for measuring
whether the recipe search's choices hold on new data (bench/bench_search.py, README "Honest selection").

    python bench/shifted_sets.py elpv-mono2poly OUT [--seed 0]   # real: ELPV defect4, material shift
    python bench/shifted_sets.py elpv-poly2mono OUT [--seed 0]   # the same, the other way round
    python bench/shifted_sets.py fmnist-sessions OUT [--seed 0]  # real photos, simulated photo sessions
    python bench/shifted_sets.py fortunes-length OUT.csv         # real texts: short ones train, long ones judge

- elpv-mono2poly: the ELPV electroluminescence scans (PyPI `elpv-dataset`, fetched once by pip), four
  defect-probability classes; train/ holds every monocrystalline cell, val/ 20 % and test/ 80 % of the
  polycrystalline ones (stratified, seeded). Same labels, another cell material: the shift a factory meets
  when a new product line starts. elpv-poly2mono swaps the materials.
- fmnist-sessions: Debian's Fashion-MNIST product photos (96 px). Each training item is "photographed" four
  times in one session (small shifts, scale and brightness changes of the same photo), so near-identical
  shots cluster in train as in a real photo session; val/ and test/ are other items, once each, in sessions
  of their own (other contrast, blur, background level): what made cross-validation inside train say 99 %
  for a model that scored 91 % on new sessions. The images are real, the sessions are simulated.
- fortunes-length: Debian's `fortunes` (8 categories), fortunes under 160 characters for training and
  longer ones (160-600) for validation (20 %) and test (80 %) in a `split` column: same topics, other length
  and style.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import random
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

FMNIST = Path("/usr/share/datasets/fashion-mnist")
FMNIST_NAMES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]
FORTUNES = Path("/usr/share/games/fortunes")
FORTUNE_CATEGORIES = ("computers", "food", "law", "love", "politics", "science", "sports", "startrek")


def elpv(out: Path, train_kind: str, seed: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp,
                        "elpv-dataset==1.0.0.post1"], check=True)
        with zipfile.ZipFile(next(Path(tmp).glob("elpv_dataset-*.whl"))) as wheel:
            wheel.extractall(Path(tmp) / "x")
        data = Path(tmp) / "x" / "elpv_dataset" / "data"
        rows = [line.split() for line in (data / "labels.csv").read_text().splitlines() if line.strip()]
        rng = random.Random(seed)
        by_class: dict[tuple[str, bool], list[str]] = {}
        for path, prob, kind in rows:
            by_class.setdefault((f"p{round(float(prob) * 100):03d}", kind == train_kind), []).append(path)
        for (label, is_train), paths in sorted(by_class.items()):
            rng.shuffle(paths)
            n_val = round(0.2 * len(paths))
            for index, path in enumerate(paths):
                split = "train" if is_train else "val" if index < n_val else "test"
                target = out / split / label
                target.mkdir(parents=True, exist_ok=True)
                (target / Path(path).name).write_bytes((data / path).read_bytes())
    for split in ("train", "val", "test"):
        print(split, {d.name: len(list(d.iterdir())) for d in sorted((out / split).iterdir())})


def fmnist_images(part: str):
    with gzip.open(FMNIST / f"{part}-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FMNIST / f"{part}-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return images, labels


def shot(image: np.ndarray, rng: np.random.Generator, session: dict) -> Image.Image:
    """One photo of an item in a session: the session's contrast, blur and background level, and this
    shot's own small shift, scale and brightness."""
    size = 96
    photo = Image.fromarray(image).resize((size, size), Image.BICUBIC)
    scale = 1 + rng.uniform(-session["scale"], session["scale"])
    scaled = photo.resize((round(size * scale),) * 2, Image.BICUBIC)
    canvas = Image.new("L", (size, size), 0)
    dx, dy = (int(v) for v in rng.integers(-session["shift"], session["shift"] + 1, 2))
    canvas.paste(scaled, ((size - scaled.width) // 2 + dx, (size - scaled.height) // 2 + dy))
    canvas = ImageEnhance.Contrast(canvas).enhance(session["contrast"])
    canvas = ImageEnhance.Brightness(canvas).enhance(session["brightness"] * (1 + rng.uniform(-0.05, 0.05)))
    if session["blur"]:
        canvas = canvas.filter(ImageFilter.GaussianBlur(session["blur"]))
    pixels = np.asarray(canvas, dtype=np.float32) + session["background"]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


SESSIONS = {
    "train": dict(items=40, shots=4, shift=3, scale=0.04, contrast=1.0, brightness=1.0, blur=0, background=0),
    "val": dict(items=8, shots=1, shift=3, scale=0.04, contrast=0.75, brightness=1.1, blur=0.8, background=25),
    "test": dict(items=60, shots=1, shift=3, scale=0.04, contrast=1.25, brightness=0.85, blur=0.5, background=12),
}


def fmnist_sessions(out: Path, seed: int) -> None:
    images, labels = fmnist_images("train")
    rng = np.random.default_rng(seed)
    for label, name in enumerate(FMNIST_NAMES):
        items = rng.permutation(np.flatnonzero(labels == label))
        start = 0
        for split, session in SESSIONS.items():
            folder = out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for item in items[start:start + session["items"]]:
                for index in range(session["shots"]):
                    shot(images[item], rng, session).save(folder / f"{item:05d}-{index}.png")
            start += session["items"]
    for split in SESSIONS:
        print(split, sum(len(list(d.iterdir())) for d in (out / split).iterdir()))


def fortunes_length(out: Path, seed: int) -> None:
    rows = []
    rng = random.Random(seed)
    for category in FORTUNE_CATEGORIES:
        text = (FORTUNES / category).read_text(encoding="utf-8", errors="replace")
        items = [t.strip() for t in text.split("\n%\n") if t.strip() and len(t.strip()) < 600]
        short = [t for t in items if len(t) < 160]
        long = [t for t in items if len(t) >= 160]
        rng.shuffle(short)
        rng.shuffle(long)
        rows += [(t, category, "train") for t in short[:120]]
        long = long[:100]
        n_val = round(0.2 * len(long))
        rows += [(t, category, "val" if i < n_val else "test") for i, t in enumerate(long)]
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label", "split"])
        writer.writerows(rows)
    print({split: sum(r[2] == split for r in rows) for split in ("train", "val", "test")}, "->", out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("set", choices=("elpv-mono2poly", "elpv-poly2mono", "fmnist-sessions", "fortunes-length"))
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.set.startswith("elpv"):
        elpv(args.out, "mono" if args.set == "elpv-mono2poly" else "poly", args.seed)
    elif args.set == "fmnist-sessions":
        fmnist_sessions(args.out, args.seed)
    else:
        fortunes_length(args.out, args.seed)


if __name__ == "__main__":
    main()
