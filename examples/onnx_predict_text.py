"""Classify texts with a text model exported by TransferLab, using only onnxruntime, numpy and tokenizers.

Copy this file into your own application; it needs nothing else from TransferLab, and no torch:

    pip install onnxruntime numpy tokenizers
    python onnx_predict_text.py model.onnx "the printer is on fire" "two eggs and some flour" --top-k 3
    python onnx_predict_text.py model.onnx --file texts.txt          # one text per line

or from Python:

    from onnx_predict_text import OnnxTextClassifier
    classifier = OnnxTextClassifier("model.onnx")
    print(classifier.predict(["the printer is on fire"], top_k=3))

Everything the model needs travels inside the `.onnx` file: its metadata_props hold the class names, the
tokenizer (Hugging Face tokenizer.json, also written beside the model as `model.tokenizer.json`) and
`preprocessing.max_tokens`, each value JSON-encoded. Tokenise, truncate to max_tokens, pad to the longest
text of the batch, and stack ids and attention mask into one int64 input [batch, 2, length]. The model
outputs calibrated logits (softmax turns them into probabilities) and, for a run TransferLab calibrated,
the probabilities and an "unknown" score: above the metadata's `trust.threshold` the text is unlike
anything the model was taught.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

UNKNOWN = "unknown"


class OnnxTextClassifier:
    def __init__(self, path: str):
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        meta = {k: json.loads(v) for k, v in self.session.get_modelmeta().custom_metadata_map.items()}
        if meta.get("modality") != "text":
            raise ValueError(f"{path} is not a TransferLab text model")
        self.classes = list(meta["classes"])
        self.tokenizer = Tokenizer.from_str(meta["tokenizer"])
        pad = self.tokenizer.padding or {}
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(int(meta["preprocessing"]["max_tokens"]))
        self.tokenizer.enable_padding(pad_id=int(pad.get("pad_id", 0)), pad_token=str(pad.get("pad_token", "[PAD]")))
        self.input_name = self.session.get_inputs()[0].name
        self.unknown_above = (meta.get("trust") or {}).get("threshold")

    def tokens(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        return np.stack([ids, mask], axis=1)

    def outputs(self, texts: list[str], batch_size: int = 32) -> tuple[np.ndarray, np.ndarray | None]:
        """(calibrated probabilities, unknown scores or None for a file without them)."""
        chunks, scores = [], []
        for start in range(0, len(texts), batch_size):
            outputs = self.session.run(None, {self.input_name: self.tokens(texts[start:start + batch_size])})
            shifted = outputs[0] - outputs[0].max(axis=1, keepdims=True)
            chunks.append(np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True))
            scores.append(outputs[2] if len(outputs) > 2 else None)
        if not chunks:
            return np.zeros((0, len(self.classes))), None
        return np.concatenate(chunks), (None if scores[0] is None else np.concatenate(scores))

    def probabilities(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        return self.outputs(texts, batch_size)[0]

    def predict(self, texts: list[str], top_k: int = 5, threshold: float = 0.0) -> list[dict]:
        results = []
        probabilities, scores = self.outputs(texts)
        for row, (text, probs) in enumerate(zip(texts, probabilities)):
            order = np.argsort(-probs, kind="stable")[:top_k]
            best = float(probs[order[0]])
            unlike = scores is not None and self.unknown_above is not None and float(scores[row]) > self.unknown_above
            results.append({"text": text, "label": UNKNOWN if unlike or best < threshold else self.classes[order[0]],
                            "score": round(best, 6), "nearest": self.classes[order[0]],
                            **({"ood_score": round(float(scores[row]), 6), "threshold": self.unknown_above}
                               if scores is not None else {}),
                            "top_k": [{"label": self.classes[k], "score": round(float(probs[k]), 6)} for k in order]})
        return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("texts", nargs="*")
    parser.add_argument("--file", help="a UTF-8 file of texts, one per line")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=0.0)
    args = parser.parse_args(argv)
    texts = list(args.texts)
    if args.file:
        with open(args.file, encoding="utf-8-sig", errors="replace") as f:
            texts += [line.strip() for line in f if line.strip()]
    if not texts:
        parser.error("give texts or --file")
    for result in OnnxTextClassifier(args.model).predict(texts, args.top_k, args.threshold):
        print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
