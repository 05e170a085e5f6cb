"""Tokens for text models: a Hugging Face tokenizer.json turned into the [B, 2, L] int64 input every text
model of this engine takes (token ids and attention mask). Only `tokenizers` and numpy: the trainer, the
checkpoint, and the torch-free ONNX predict path all split texts with this one class.
"""
from __future__ import annotations

import hashlib

import numpy as np


class TextTokenizer:
    """tokenizer.json → [B, 2, L] int64 arrays (ids, attention mask), truncated at `max_tokens` and padded
    to the longest text of the batch (not to a fixed length: short texts stay cheap)."""

    def __init__(self, tokenizer_json: str, max_tokens: int):
        from tokenizers import Tokenizer
        self.json = tokenizer_json
        self.max_tokens = int(max_tokens)
        self._full = None                 # untruncated, for token_counts only: built on first use
        self._tokenizer = Tokenizer.from_str(tokenizer_json)
        self._tokenizer.enable_truncation(self.max_tokens)
        pad = self._tokenizer.padding or {}
        self._tokenizer.no_padding()
        self._tokenizer.enable_padding(pad_id=int(pad.get("pad_id", 0)), pad_token=str(pad.get("pad_token", "[PAD]")))

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 2, 1), dtype=np.int64)
        encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        return np.stack([ids, mask], axis=1)

    def token_counts(self, texts: list[str]) -> list[int]:
        """Tokens of each text before truncation (special tokens included): how many get cut."""
        if self._full is None:
            from tokenizers import Tokenizer
            self._full = Tokenizer.from_str(self.json)
            self._full.no_padding()
            self._full.no_truncation()
        return [len(e.ids) for e in self._full.encode_batch(list(texts))]

    def digest(self) -> str:
        return hashlib.sha256(f"{self.max_tokens}|{self.json}".encode()).hexdigest()[:16]


def checkpoint_tokenizer(meta: dict) -> TextTokenizer:
    """The tokenizer a text checkpoint's (or exported file's) metadata carries."""
    return TextTokenizer(meta["tokenizer"], int(meta["max_tokens"]))
