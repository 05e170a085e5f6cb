"""Text classifiers: a sentence encoder (a BERT-family model from a local Hugging Face folder), mean pooling
as the sentence-transformer was trained, then a classifier head.

The sentence-transformer's final unit-length normalisation is left out before the head: with the default
head recipe (lr 3e-3, 10 epochs) it cost 4 points on fortunes (8 categories, 177 test texts: 78.0 % vs
81.9 %), since unit vectors give small logits the head needs more steps to scale up.

The model speaks the same interface as the timm image models the rest of the engine knows:
`get_classifier`, `forward_features` (pooled sentence vectors), `forward_head`, and a timm-style
`group_matcher` (embeddings, each transformer layer, the head), so the layer tree, the freeze presets,
the per-layer learning rates and the checkpoint code work on it unchanged. Its input is one int64 tensor
[B, 2, L]: token ids and attention mask stacked, so a batch slices, moves and exports like an image batch
(one input, one output).

Tokenisation uses the `tokenizers` library on the folder's tokenizer.json, the same file an exported model
ships with, so training, `predict` and the torch-free ONNX path split texts identically.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from engine.core.runtime import TRACING
from engine.modalities.text.tokens import TextTokenizer
from engine.models.catalog import BackboneSpec, ModelBundle
from engine.models.heads import make_head
from engine.modalities.text.catalog import TEXT_ENCODERS, TextEncoderError, encoder_folder, encoder_max_tokens

_TRANSFORMERS_LOCK = threading.Lock()
HEAD_DROPOUT = 0.1          # BERT's own classifier dropout (hidden_dropout_prob)
SORT_BATCH = 64             # texts per batch in the frozen pass, sorted by length so padding stays short


# -- tokens -------------------------------------------------------------------------------------------
def tokenizer_from_folder(folder: Path, max_tokens: int | None = None) -> TextTokenizer:
    """The folder's tokenizer.json, truncating at `max_tokens` (default: the encoder's own length)."""
    text = (Path(folder) / "tokenizer.json").read_text(encoding="utf-8")
    return TextTokenizer(text, max_tokens or encoder_max_tokens(Path(folder)))


def collate_texts(tokenizer: TextTokenizer):
    """A DataLoader collate: (text, label) pairs → ([B, 2, L] tokens, [B] labels)."""
    def collate(batch):
        texts, labels = zip(*batch)
        return torch.from_numpy(tokenizer.encode(list(texts))), torch.as_tensor(labels, dtype=torch.long)
    return collate


# -- the model ----------------------------------------------------------------------------------------
def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of the token vectors the mask keeps (sentence-transformers' mean pooling)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


class TextClassifier(nn.Module):
    """encoder → mean pooling (→ L2 normalisation with `normalize`) → dropout → head."""

    def __init__(self, encoder: nn.Module, num_classes: int, head: str = "linear", normalize: bool = False,
                 dropout: float = HEAD_DROPOUT):
        super().__init__()
        self.encoder = encoder
        self.normalize = normalize
        self.drop_rate = dropout
        self.num_features = int(encoder.config.hidden_size)
        self.head_drop = nn.Dropout(dropout)
        self.classifier = make_head(head, self.num_features, num_classes, dropout)

    def forward_features(self, tokens: torch.Tensor) -> torch.Tensor:
        ids, mask = tokens[:, 0], tokens[:, 1]
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        pooled = mean_pool(hidden, mask)
        return nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        features = self.head_drop(features)
        return features if pre_logits else self.classifier(features)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(tokens))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier = nn.Linear(self.num_features, num_classes)

    def group_matcher(self, coarse: bool = True) -> dict:
        """timm's grouping: the embeddings, then each transformer layer; the head falls last."""
        return {"stem": r"^encoder\.embeddings", "blocks": r"^encoder\.(?:encoder\.)?layers?\.(\d+)"}


@dataclass
class TextBundle(ModelBundle):
    """A text model with what training, checkpoints and export need: its tokenizer and encoder config."""

    tokenizer: TextTokenizer | None = None
    encoder_config: dict = field(default_factory=dict)
    modality: str = "text"


def _transformers():
    """transformers' AutoConfig and AutoModel, imported one thread at a time: its lazy module resolves names
    on first use, and two threads doing that at once (a layer tree building while a fit starts) fail with
    "cannot import name 'AutoModel'"."""
    with _TRANSFORMERS_LOCK:
        from transformers import AutoConfig, AutoModel
        from transformers.utils import logging as hf_logging
    return AutoConfig, AutoModel, hf_logging


def _encoder_from_config(config_dict: dict) -> nn.Module:
    AutoConfig, AutoModel, _ = _transformers()
    config = AutoConfig.for_model(**config_dict)
    encoder = AutoModel.from_config(config)
    _drop_pooler(encoder)
    return encoder


def _drop_pooler(encoder: nn.Module) -> None:
    """BERT's pooler (a dense layer on the first token) is unused by mean pooling: left in, it would show
    in the layer tree and train for nothing."""
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None


def _encoder_config_dict(encoder: nn.Module) -> dict:
    config = encoder.config.to_dict()
    for key in ("_name_or_path", "transformers_version", "architectures", "torch_dtype", "dtype"):
        config.pop(key, None)
    return config


def create_text_model(name: str, num_classes: int, *, head: str = "linear", max_tokens: int | None = None,
                      weights: str = "pretrained") -> TextBundle:
    """The encoder `name` (catalog name or model folder) with its pretrained weights, and a fresh head."""
    _, AutoModel, hf_logging = _transformers()
    folder = encoder_folder(name)
    hf_logging.set_verbosity_error()          # "some weights of the model were not used": the pooler
    hf_logging.disable_progress_bar()
    try:
        with TRACING:                # not while torch.export traces on another thread (engine.core.runtime)
            encoder = AutoModel.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for a damaged folder
        raise TextEncoderError(f"cannot load the text encoder in {folder}: {str(exc).splitlines()[0][:200]}") \
            from None
    _drop_pooler(encoder)
    if weights == "random":
        encoder = _encoder_from_config(_encoder_config_dict(encoder))
    model = TextClassifier(encoder, num_classes, head).eval()
    tokenizer = tokenizer_from_folder(folder, max_tokens)
    spec = text_spec(name, encoder.config.model_type)
    return TextBundle(model, spec, None, "random" if weights == "random" else f"pretrained ({spec.name})",
                      tokenizer=tokenizer, encoder_config=_encoder_config_dict(encoder))


def text_spec(name: str, model_type: str) -> BackboneSpec:
    for spec in TEXT_ENCODERS:
        if spec.name == name:
            return BackboneSpec(spec.name, model_type, spec.title)
    return BackboneSpec(os.fspath(name), model_type, f"{Path(name).name} ({model_type})")


def text_checkpoint_meta(bundle: TextBundle, model: TextClassifier) -> dict:
    """What a text checkpoint needs beyond the image one, to rebuild the model without the encoder's folder."""
    from engine.models.heads import head_kind
    return {"modality": "text", "backbone": bundle.spec.name, "arch": bundle.spec.arch,
            "encoder_config": bundle.encoder_config, "normalize": bool(model.normalize),
            "head": head_kind(model), "max_tokens": bundle.tokenizer.max_tokens,
            "tokenizer": bundle.tokenizer.json, "preprocessing": {"max_tokens": bundle.tokenizer.max_tokens}}


def build_text_model(meta: dict) -> tuple[TextClassifier, TextTokenizer]:
    """The architecture a text checkpoint's metadata describes (weights still to be loaded)."""
    encoder = _encoder_from_config(dict(meta["encoder_config"]))
    model = TextClassifier(encoder, len(meta["classes"]), meta.get("head", "linear"), bool(meta.get("normalize")))
    return model.eval(), TextTokenizer(meta["tokenizer"], int(meta["max_tokens"]))
