"""Classify images with a TransferLab model exported for OpenVINO (`export RUN --openvino DIR`), using only
openvino, numpy and Pillow; the preprocessing is onnx_predict.py's (copy both files).

    pip install openvino numpy pillow
    python openvino_predict.py DIR photo.jpg other.png

The IR folder holds model.xml and model.bin; the model card (classes, preprocessing, the unknown threshold,
precision) travels in the IR's runtime info under "transferlab_card" and beside it in model.json. An int8
export (`--precision int8`) runs the same way.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import openvino as ov

from onnx_predict import UNKNOWN, load_rgb, preprocess


def predict(folder: str, paths: list[str]) -> list[dict]:
    model = ov.Core().read_model(str(Path(folder) / "model.xml"))
    card = json.loads(model.get_rt_info(["transferlab_card"]).astype(str))
    compiled = ov.Core().compile_model(model, "CPU")
    batch = np.stack([preprocess(load_rgb(path), card["preprocessing"]) for path in paths])
    outputs = compiled(batch)
    logits = outputs[compiled.outputs[0]].astype(np.float64)
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    threshold = (card.get("trust") or {}).get("threshold")
    scores = outputs[compiled.outputs[2]] if len(compiled.outputs) > 2 else None
    return [{"path": path, "label": UNKNOWN if scores is not None and threshold is not None and scores[i] > threshold
             else card["classes"][int(probs.argmax())], "nearest": card["classes"][int(probs.argmax())],
             "score": round(float(probs.max()), 6)} for i, (path, probs) in enumerate(zip(paths, probabilities))]


if __name__ == "__main__":
    for row in predict(sys.argv[1], sys.argv[2:]):
        print(json.dumps(row))
