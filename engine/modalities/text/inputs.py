"""Training inputs for texts (`TextInputs`): the Trainer's loop, callbacks, checkpoints and resumable state,
with texts as its inputs. Only what a modality changes is here: the model (engine.modalities.text.model), the loaders
(tokens, or sentence vectors cached once when only the head trains) and evaluation's inputs.

Head-only training runs on the frozen encoder's pooled sentence vectors, computed once per (encoder,
tokenizer, texts) and kept on disk like the image feature cache, so a head trains in seconds and a second
fit on the same texts starts at once. When the last layers train, the hidden states after the frozen ones
are computed once per fit (in memory) and each epoch runs only the layers that train; anything else
trains on tokens.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from engine.core.control import RunControl
from engine.core.memory import MEMORY_FRACTION, format_bytes, memory_budget
from engine.core.paths import cache_dir
from engine.core.runtime import release_freed_memory
from engine.modalities.text.model import (SORT_BATCH, TextBundle, TextClassifier, TextTokenizer, collate_texts, create_text_model,
                                mean_pool)
from engine.training.caches import FeatureDataset, HeadOnFeatures, classifier_parameter_names, read_entry, write_entry
from engine.training.config import TrainConfig
from engine.training.inputs import TrainingInputs
from engine.training.optim import seed_everything

log = logging.getLogger("transferlab")


class TextDataset(Dataset):
    """(text, label) pairs; the loader's collate turns a batch into tokens."""

    def __init__(self, texts: list[str], labels: list[int]):
        self.texts, self.labels = list(texts), list(labels)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int):
        return self.texts[index], self.labels[index]


class EmbeddingCache:
    """Pooled sentence vectors of the frozen encoder, [N, D], kept in memory and on disk (size + CRC-32
    checked, recomputed when damaged). Texts go through in batches of similar length, so padding stays
    short: 400 fortunes took 8.0-8.3 s instead of 17.5-17.8 s in file order (batches of 64)."""

    stage = "embeddings"

    def __init__(self, model: TextClassifier, tokenizer: TextTokenizer, folder: Path | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.folder = Path(folder) if folder else cache_dir() / "text-embeddings"
        self.fingerprint = _encoder_digest(model, tokenizer)
        self.runtime_used: str | None = None        # 'pytorch' once a pass ran, None when all was read back
        self.notes: list[str] = []
        self._memory: dict[str, torch.Tensor] = {}

    def embeddings(self, texts: list[str], control: RunControl, progress) -> torch.Tensor:
        key = self._key(texts)
        if key in self._memory:
            return self._memory[key]
        path = self.folder / f"{key}.safetensors"
        vectors = self._read(path)
        if vectors is None:
            vectors = self._compute(texts, control, progress)
            self.runtime_used = "pytorch"
            self._keep(path, vectors)
        self._memory[key] = vectors
        return vectors

    def _key(self, texts: list[str]) -> str:
        digest = hashlib.sha256(self.fingerprint.encode())
        for text in texts:
            digest.update(text.encode("utf-8", "surrogatepass"))
            digest.update(b"\0")
        return digest.hexdigest()[:32]

    def _read(self, path: Path) -> torch.Tensor | None:
        if not path.is_file():
            return None
        try:
            return read_entry(path)
        except (OSError, ValueError) as exc:
            self.notes.append(f"cached sentence vectors were damaged ({exc}): computed again")
            path.unlink(missing_ok=True)
            return None

    def _keep(self, path: Path, vectors: torch.Tensor) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_entry(path, vectors)
        except OSError as exc:
            self.notes.append(f"sentence vectors kept in memory only: {exc.strerror or exc}")

    @torch.inference_mode()
    def _compute(self, texts: list[str], control: RunControl, progress) -> torch.Tensor:
        model = self.model
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = torch.zeros((len(texts), model.num_features))
        try:
            for start in range(0, len(order), SORT_BATCH):
                control.checkpoint()
                rows = order[start:start + SORT_BATCH]
                tokens = torch.from_numpy(self.tokenizer.encode([texts[i] for i in rows])).to(device)
                out[rows] = model.forward_features(tokens).float().cpu()
                progress(self.stage, min(start + SORT_BATCH, len(order)), len(order))
        finally:
            model.train(was_training)
        return out


class TextActivations:
    """Hidden states after the frozen layers, one [length, H] tensor per text (its own length: nothing
    padded is kept), computed once per fit in evaluation mode, as the image path caches the activations
    before its last blocks. Texts go through in batches of similar length."""

    stage = "hidden-states"

    def __init__(self, model: TextClassifier, tokenizer: TextTokenizer, boundary: int):
        self.model, self.tokenizer, self.boundary = model, tokenizer, boundary
        self.fingerprint = _prefix_digest(model, tokenizer, boundary)
        self._memory: dict[str, list[torch.Tensor]] = {}

    def activations(self, texts: list[str], control: RunControl, progress) -> list[torch.Tensor]:
        key = hashlib.sha256("\0".join(texts).encode("utf-8", "surrogatepass")).hexdigest()
        if key not in self._memory:
            self._memory[key] = self._compute(texts, control, progress)
        return self._memory[key]

    @torch.inference_mode()
    def _compute(self, texts: list[str], control: RunControl, progress) -> list[torch.Tensor]:
        model = self.model
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[torch.Tensor | None] = [None] * len(texts)
        try:
            for start in range(0, len(order), SORT_BATCH):
                control.checkpoint()
                rows = order[start:start + SORT_BATCH]
                tokens = torch.from_numpy(self.tokenizer.encode([texts[i] for i in rows])).to(device)
                hidden = frozen_prefix(model, tokens, self.boundary).float().cpu()
                lengths = tokens[:, 1].sum(1).tolist()
                for row, state, length in zip(rows, hidden, lengths):
                    out[row] = state[:int(length)].clone()
                progress(self.stage, min(start + SORT_BATCH, len(order)), len(order))
        finally:
            model.train(was_training)
        return out

    @staticmethod
    def nbytes(activations: list[torch.Tensor]) -> int:
        return sum(a.numel() * a.element_size() for a in activations)


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, L] 1/0 attention mask → [B, 1, 1, L] added to the attention scores (0 or the dtype's minimum), the
    form BERT's eager and SDPA attention both accept."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def encoder_layers(model: TextClassifier) -> nn.ModuleList:
    return model.encoder.encoder.layer


def _run_layer(layer: nn.Module, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    out = layer(hidden, attention_mask=mask)
    return out[0] if isinstance(out, tuple) else out


def frozen_prefix(model: TextClassifier, tokens: torch.Tensor, boundary: int) -> torch.Tensor:
    """Hidden states [B, L, H] after the embeddings and the first `boundary` transformer layers."""
    ids, mask = tokens[:, 0], tokens[:, 1]
    hidden = model.encoder.embeddings(input_ids=ids)
    extended = additive_mask(mask, hidden.dtype)
    for layer in encoder_layers(model)[:boundary]:
        hidden = _run_layer(layer, hidden, extended)
    return hidden


class SuffixOnTextActivations(nn.Module):
    """The layers from `boundary` on, pooling and head, on cached hidden states packed as [B, L, H + 1]
    (the last channel holds the attention mask, so a batch is one tensor: it slices, moves and splits into
    micro-batches like an image batch). Shares its modules with the model, so the checkpoint gets them."""

    def __init__(self, model: TextClassifier, boundary: int):
        super().__init__()
        self.model, self.boundary = model, boundary

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        hidden, mask = packed[..., :-1], packed[..., -1]
        extended = additive_mask(mask, hidden.dtype)
        for layer in encoder_layers(self.model)[self.boundary:]:
            hidden = _run_layer(layer, hidden, extended)
        pooled = mean_pool(hidden, mask)
        if self.model.normalize:
            pooled = nn.functional.normalize(pooled, dim=-1)
        return self.model.forward_head(pooled)


class ActivationDataset(Dataset):
    def __init__(self, activations: list[torch.Tensor], labels: list[int]):
        self.activations, self.labels = activations, list(labels)

    def __len__(self) -> int:
        return len(self.activations)

    def __getitem__(self, index: int):
        return self.activations[index], self.labels[index]


def pack_activations(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden [L_i, H], label) pairs → ([B, L, H + 1] with the mask as the last channel, [B] labels)."""
    states, labels = zip(*batch)
    longest, width = max(s.shape[0] for s in states), states[0].shape[1]
    packed = torch.zeros((len(states), longest, width + 1), dtype=states[0].dtype)
    for row, state in enumerate(states):
        packed[row, :state.shape[0], :width] = state
        packed[row, :state.shape[0], width] = 1.0
    return packed, torch.as_tensor(labels, dtype=torch.long)


def activation_boundary(model: TextClassifier) -> int | None:
    """The first transformer layer that trains, when the embeddings and every layer before it are frozen
    (and at least one layer is): the hidden states there can be computed once. None otherwise."""
    def frozen(module: nn.Module) -> bool:
        return not any(p.requires_grad for p in module.parameters())
    if not frozen(model.encoder.embeddings):
        return None
    first = next((k for k, layer in enumerate(encoder_layers(model)) if not frozen(layer)), None)
    return first if first else None


def _prefix_digest(model: TextClassifier, tokenizer: TextTokenizer, boundary: int) -> str:
    """Changes whenever the hidden states before layer `boundary` would: the embeddings' and those layers'
    weights, the tokenizer and length (not the layers that train, so a resumed fit finds the same)."""
    digest = hashlib.sha256(f"{tokenizer.digest()}|layers<{boundary}".encode())
    for module in (model.encoder.embeddings, *encoder_layers(model)[:boundary]):
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _encoder_digest(model: TextClassifier, tokenizer: TextTokenizer) -> str:
    """Changes whenever the frozen encoder's output would: its weights, pooling, tokenizer and length."""
    digest = hashlib.sha256(f"{tokenizer.digest()}|normalize={model.normalize}".encode())
    for name, tensor in model.encoder.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def prepare_text_config(config: TrainConfig) -> TrainConfig:
    """Image-only settings do not apply to texts: no image augmentation, no mirror test-time
    augmentation, no ONNX frozen pass (the tokens path runs in PyTorch)."""
    config.augmentation = "none"
    config.tta = "none"
    config.cached_views = 1
    return config


class TextInputs(TrainingInputs):
    """The inputs of a fit on a text dataset (report.modality == 'text') with a text encoder
    (config.backbone): sentence vectors, hidden states or tokens (module docstring)."""

    def __init__(self):
        super().__init__()
        self._embeddings: EmbeddingCache | None = None
        self._activations: TextActivations | None = None

    def configure(self, config: TrainConfig) -> TrainConfig:
        return prepare_text_config(replace(config))

    def create_bundle(self, config: TrainConfig, num_classes: int) -> TextBundle:
        """The encoder and a fresh head (seeded: the same for a resumed fit); training then draws from
        freshly seeded streams."""
        bundle = create_text_model(config.backbone, num_classes, head=config.head, max_tokens=config.max_tokens,
                                   weights=config.weights)
        seed_everything(config.seed)
        return bundle

    # -- the pipeline ----------------------------------------------------------------------------------
    def _head_only(self) -> bool:
        model = self.trainer.model
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        return trainable == classifier_parameter_names(model)

    def pipeline(self):
        """(network, train loader, val loader, path): cached sentence vectors when only the head trains
        ('embeddings'), hidden states after the frozen layers ('hidden-states'), else tokens through the
        encoder ('tokens')."""
        trainer = self.trainer
        self.cached_net = None
        cache_on = trainer.config.cache == "auto"
        if cache_on and self._head_only():
            trainer.path_notes.append("training on cached sentence vectors (the encoder is frozen)")
            self.cached_net = HeadOnFeatures(trainer.model)
            train = self._vector_loader(trainer.train_samples, shuffle=True)
            val = self._vector_loader(trainer.val_samples, shuffle=False)
            return self.cached_net, train, val, "embeddings"
        boundary = activation_boundary(trainer.model) if cache_on else None
        if boundary is not None:
            cached = self._activation_pipeline(boundary)
            if cached is not None:
                return cached
        trainer.path_notes.append("training on tokens" + ("" if cache_on else " (cache off)"))
        train = self._token_loader(trainer.train_samples, shuffle=True)
        val = self._token_loader(trainer.val_samples, shuffle=False)
        return trainer.model, train, val, "tokens"

    def _activation_pipeline(self, boundary: int):
        """The frozen layers run once per text; each epoch runs the layers from `boundary` on. None when the
        hidden states would not fit in memory (then the fit trains on tokens)."""
        trainer = self.trainer
        self._activations = TextActivations(trainer.model, trainer.bundle.tokenizer, boundary)
        self.feature_cache = self._activations
        train = self._activation_loader(trainer.train_samples, shuffle=True)
        needed = TextActivations.nbytes(train.dataset.activations) * (len(trainer.report.samples) /
                                                                       max(1, len(trainer.train_samples)))
        if needed > memory_budget():
            trainer.path_notes.append(f"training on tokens: cached hidden states would need "
                                      f"{format_bytes(needed)}, more than {MEMORY_FRACTION:.0%} of RAM")
            self._activations = None
            return None
        self.cached_net = SuffixOnTextActivations(trainer.model, boundary)
        val = self._activation_loader(trainer.val_samples, shuffle=False)
        trainer.path_notes.append(f"training on cached hidden states after layer {boundary - 1} "
                                  f"({format_bytes(needed)}; the layers before it run once per text)")
        return self.cached_net, train, val, "hidden-states"

    def _loader(self, dataset: Dataset, samples, shuffle: bool, collate_fn=None) -> DataLoader:
        """A loader in the fit's batches: shuffled (or balanced) by the fit's generator for training."""
        sampler = self.balanced_sampler(samples) if shuffle else None
        return DataLoader(dataset, batch_size=self.trainer.config.batch_size, shuffle=shuffle and sampler is None,
                          sampler=sampler, generator=self.trainer.generator if shuffle else None,
                          collate_fn=collate_fn, pin_memory=self.pin_memory)

    def _activation_loader(self, samples, shuffle: bool) -> DataLoader:
        trainer = self.trainer
        states = self._activations.activations([s.text for s in samples], trainer.control,
                                               trainer.callbacks.on_progress)
        return self._loader(ActivationDataset(states, [s.label for s in samples]), samples, shuffle,
                            pack_activations)

    def _token_loader(self, samples, shuffle: bool) -> DataLoader:
        dataset = TextDataset([s.text for s in samples], [s.label for s in samples])
        return self._loader(dataset, samples, shuffle, collate_texts(self.trainer.bundle.tokenizer))

    def _vector_loader(self, samples, shuffle: bool) -> DataLoader:
        dataset = FeatureDataset([self._vectors(samples)], [s.label for s in samples])
        if not shuffle:
            return DataLoader(dataset, batch_size=256, pin_memory=self.pin_memory)
        return self._loader(dataset, samples, shuffle)

    def _vectors(self, samples) -> torch.Tensor:
        trainer = self.trainer
        if self._embeddings is None:
            self._embeddings = EmbeddingCache(trainer.model, trainer.bundle.tokenizer)
            self.feature_cache = self._embeddings
        try:
            return self._embeddings.embeddings([s.text for s in samples], trainer.control,
                                               trainer.callbacks.on_progress)
        finally:
            for note in self._embeddings.notes:
                self.note_once(note)

    # -- evaluation and the fit's record ---------------------------------------------------------------
    def eval_inputs(self, samples) -> tuple[nn.Module, DataLoader]:
        if self.cached_net is None:
            return self.evaluated(self.trainer.model), self._token_loader(samples, shuffle=False)
        if isinstance(self.cached_net, SuffixOnTextActivations):
            return self.cached_net, self._activation_loader(samples, shuffle=False)
        return self.cached_net, self._vector_loader(samples, shuffle=False)

    def cache_fingerprint(self, path: str) -> str | None:
        if path == "hidden-states" and self._activations is not None:
            return self._activations.fingerprint
        return self._embeddings.fingerprint if path == "embeddings" and self._embeddings else None

    def frozen_pass(self, path: str) -> str:
        if path == "hidden-states":
            return "pytorch"                 # hidden states are kept in memory only, computed by each fit
        if path != "embeddings" or self._embeddings is None:
            return "none"
        return self._embeddings.runtime_used or "reused"

    def annotate_metrics(self, metrics: dict, predictions: dict) -> None:
        """Each text beside its row in the most-confidently-wrong list and in predictions.json (the results
        view shows them; the export verifies on them)."""
        texts = {s.path: s.text for s in self.trainer.report.samples}
        for item in metrics.get("most_confident_wrong", []):
            item["text"] = texts.get(item["path"], "")
        for rows in predictions.values():
            for row in rows:
                row["text"] = texts.get(row["path"], "")

    def release(self) -> None:
        self.cached_net = self._embeddings = self._activations = None
        release_freed_memory()
