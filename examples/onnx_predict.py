"""Classify images with a model exported by TransferLab, using only onnxruntime, numpy and Pillow.

Copy this file into your own application; it needs nothing else from TransferLab, and no torch:

    pip install onnxruntime numpy pillow
    python onnx_predict.py model.onnx photo.jpg other.png --top-k 3 --threshold 0.6

or from Python:

    from onnx_predict import OnnxImageClassifier
    classifier = OnnxImageClassifier("model.onnx")
    print(classifier.predict(["photo.jpg"], top_k=3))

Everything the model needs travels inside the `.onnx` file: its metadata_props hold the class names and
the preprocessing (input_size, mean, std, interpolation, crop_pct), each value JSON-encoded. The steps
below reproduce TransferLab's evaluation preprocessing exactly (the project's tests compare them):
upright RGB -> resize the shorter side to round(input_size / crop_pct) -> centre crop -> scale to 0..1
-> normalise -> NCHW float32. The model outputs logits; softmax turns them into probabilities.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}
UNKNOWN = "unknown"


def load_rgb(path: str) -> Image.Image:
    """Open an image as upright 8-bit RGB: first frame, EXIF rotation applied, transparency on white,
    16-bit greyscale scaled rather than clipped."""
    with Image.open(path) as image:
        image.seek(0)
        image.load()
        try:
            image = ImageOps.exif_transpose(image)
        except Exception:  # a broken EXIF block must not make a good image unusable
            pass
        if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
            values = np.clip(np.asarray(image, dtype=np.float64) / 65535.0, 0.0, 1.0)
            return Image.fromarray(np.rint(values * 255.0).astype(np.uint8), mode="L").convert("RGB")
        if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
            rgba = image.convert("LA").convert("RGBA") if image.mode == "La" else image.convert("RGBA")
            background = Image.new("RGB", rgba.size, (255, 255, 255))
            background.paste(rgba, mask=rgba.getchannel("A"))
            return background
        return image.convert("RGB")


def preprocess(image: Image.Image, pre: dict) -> np.ndarray:
    """An RGB image as the (3, H, W) float32 array the model was trained with."""
    size = int(pre["input_size"])
    short = int(round(size / float(pre["crop_pct"])))
    width, height = image.size
    new_size = (short, int(short * height / width)) if width <= height else (int(short * width / height), short)
    if new_size != image.size:
        image = image.resize(new_size, resample=FILTERS.get(pre["interpolation"], Image.BILINEAR))
    width, height = image.size
    if size > width or size > height:                  # only when crop_pct > 1: pad with black
        padded = Image.new(image.mode, (max(width, size), max(height, size)))
        padded.paste(image, ((size - width) // 2 if size > width else 0,
                             (size - height) // 2 if size > height else 0))
        image, (width, height) = padded, padded.size
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    image = image.crop((left, top, left + size, top + size))
    pixels = np.asarray(image, dtype=np.float32) * np.float32(1.0 / 255)
    mean, std = np.asarray(pre["mean"], np.float32), np.asarray(pre["std"], np.float32)
    return np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1))


class OnnxImageClassifier:
    """A TransferLab ONNX model: `predict(paths)` returns top-k labels with probabilities."""

    def __init__(self, onnx_path: str):
        self.session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        meta = {k: json.loads(v) for k, v in self.session.get_modelmeta().custom_metadata_map.items()}
        if "classes" not in meta or "preprocessing" not in meta:
            raise ValueError(f"{onnx_path} has no TransferLab metadata (classes, preprocessing)")
        self.classes = list(meta["classes"])
        self.preprocessing = meta["preprocessing"]
        self.input_name = self.session.get_inputs()[0].name
        # a calibrated run's file also outputs an "unknown" score; above trust.threshold the input is unlike
        # anything the model was taught (trust.thresholds[i] accepts 0.5 + 0.005 i of its validation images)
        self.unknown_above = (meta.get("trust") or {}).get("threshold")

    def outputs(self, images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray | None]:
        """(calibrated probabilities, unknown scores or None for a file without them)."""
        batch = np.stack([preprocess(image, self.preprocessing) for image in images])
        outputs = self.session.run(None, {self.input_name: batch})
        logits = outputs[0].astype(np.float64)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True), (outputs[2] if len(outputs) > 2 else None)

    def probabilities(self, images: list[Image.Image]) -> np.ndarray:
        return self.outputs(images)[0]

    def predict(self, paths: list[str], top_k: int = 5, threshold: float = 0.0) -> list[dict]:
        """One dict per image: path, label ('unknown' when unlike the training images, or below
        `threshold`), score, nearest (the top class), ood_score and its threshold (when the file has them),
        top_k."""
        results = []
        for path in paths:
            try:
                probs, scores = self.outputs([load_rgb(path)])
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:   # report, go on
                results.append({"path": path, "error": str(exc) or type(exc).__name__})
                continue
            probs = probs[0]
            order = np.argsort(-probs, kind="stable")[:top_k]
            best = float(probs[order[0]])
            unlike = scores is not None and self.unknown_above is not None and float(scores[0]) > self.unknown_above
            results.append({"path": path, "label": UNKNOWN if unlike or best < threshold else self.classes[order[0]],
                            "score": round(best, 6), "nearest": self.classes[order[0]],
                            **({"ood_score": round(float(scores[0]), 6), "threshold": self.unknown_above}
                               if scores is not None else {}),
                            "top_k": [{"label": self.classes[k], "score": round(float(probs[k]), 6)}
                                      for k in order]})
        return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a .onnx file exported by TransferLab")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=0.0, help="answer 'unknown' below this probability")
    args = parser.parse_args(argv)
    classifier = OnnxImageClassifier(args.model)
    failed = 0
    for result in classifier.predict(args.images, args.top_k, args.threshold):
        failed += "error" in result
        print(json.dumps(result, ensure_ascii=False))
    return 1 if failed == len(args.images) else 0


if __name__ == "__main__":
    sys.exit(main())
