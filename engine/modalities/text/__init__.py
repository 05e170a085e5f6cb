"""Texts: CSV/TSV/JSONL files or folders of .txt files, sentence encoders from local Hugging Face folders,
tokens through the encoder's own tokenizer.

This object is the one place that says "for texts, use these"; every import is lazy, so asking for the
modality costs nothing (no torch, no transformers).
"""
from __future__ import annotations

from engine.core.modality import TEXT_VIEW, Modality


class TextModality(Modality):
    name = "text"
    noun = "text"
    nouns = "texts"
    model_noun = "text encoder"
    takes_model_folders = True

    def reads(self, source) -> bool:
        from engine.modalities.text.data import is_text_dataset
        return bool(source) and is_text_dataset(source)

    def scan(self, source, *, seed: int = 0, backbone: str | None = None, progress=None, control=None,
             max_tokens: int | None = None, text_column: str | None = None, label_column: str | None = None,
             split_column: str | None = None):
        """The report of a text dataset, its long texts counted with `backbone`'s tokenizer (default: the
        default text encoder)."""
        from engine.modalities.text.data import scan_texts
        from engine.modalities.text.model import tokenizer_from_folder
        from engine.modalities.text.catalog import encoder_folder
        encoder = backbone if self.owns_backbone(backbone) else self.default_backbone
        tokenizer = tokenizer_from_folder(encoder_folder(encoder), max_tokens)
        return scan_texts(source, text_column=text_column, label_column=label_column, split_column=split_column,
                          seed=seed, token_counter=tokenizer.token_counts, max_tokens=tokenizer.max_tokens,
                          progress=progress, control=control)

    def sample_fields(self, sample) -> dict:
        return {"text": sample.text or ""}

    def owns_backbone(self, name: str | None) -> bool:
        from engine.modalities.text.catalog import is_text_backbone
        return is_text_backbone(name)

    def backbone_rows(self) -> list[dict]:
        from engine.modalities.text.catalog import list_text_encoders
        return [{**row, "modality": self.name} for row in list_text_encoders()]

    @property
    def default_backbone(self) -> str:
        from engine.modalities.text.catalog import DEFAULT_TEXT_ENCODER
        return DEFAULT_TEXT_ENCODER

    def checkpoint_meta(self, bundle, model) -> dict:
        from engine.modalities.text.model import text_checkpoint_meta
        return text_checkpoint_meta(bundle, model)

    def build_from_meta(self, meta: dict, head: str):
        from engine.modalities.text.model import build_text_model
        return build_text_model({**meta, "head": head})[0]

    def ensemble_meta(self, member_metas: list[dict]) -> dict:
        first = member_metas[0]
        return {"tokenizer": first["tokenizer"], "max_tokens": first["max_tokens"],
                "member_encoders": [{"encoder_config": meta["encoder_config"], "normalize": bool(meta.get("normalize"))}
                                    for meta in member_metas]}

    def build_member(self, meta: dict, index: int):
        from engine.modalities.text.model import build_text_model
        member = meta["ensemble"][index]
        return build_text_model({**meta, **member, **meta["member_encoders"][index]})[0]

    def training_inputs(self):
        from engine.modalities.text.inputs import TextInputs
        return TextInputs()

    def eval_inputs(self, model, checkpoint, samples, batch_size: int):
        from torch.utils.data import DataLoader

        from engine.modalities.text.model import collate_texts
        from engine.modalities.text.tokens import checkpoint_tokenizer
        from engine.modalities.text.inputs import TextDataset
        dataset = TextDataset([s.text for s in samples], [s.label for s in samples])
        tokens = collate_texts(checkpoint_tokenizer(checkpoint.meta))
        return model, DataLoader(dataset, batch_size=batch_size, collate_fn=tokens)

    def recipe_search(self):
        from engine.modalities.text.search import TextRecipeSearch
        return TextRecipeSearch

    def export(self, run_dir, out, *, verify=None, tolerance: float = 1e-3, exporter: str = "auto",
               dynamic_size: bool = False, progress=None, control=None):
        from engine.outputs.export import ExportError
        from engine.modalities.text.export import export_text_run
        if dynamic_size:
            raise ExportError("a text model takes any number of texts already; --dynamic-size is for images")
        return export_text_run(run_dir, out, verify_texts=verify, tolerance=tolerance, exporter=exporter,
                               progress=progress, control=control)

    int8_method = "dynamic"     # transformers: int8 weights, activations quantized per batch (measured)

    def row_input(self, row: dict):
        return row.get("text") or None

    def classifier(self, path, kind: str, device: str = "cpu"):
        from engine.modalities.text.predict import OnnxTextClassifier, TorchTextClassifier
        return OnnxTextClassifier(path) if kind == "onnx" else TorchTextClassifier(path, device)

    def prediction_items(self, arguments: list[str], *, text_file=None, text_column: str | None = None, **options):
        """Each argument is a text, a .txt file (one text per line) or a .csv/.tsv file (its text column)."""
        from pathlib import Path

        from engine.modalities.text.predict import read_text_inputs
        items = []
        for argument in arguments:
            suffix = Path(argument).suffix.lower()
            if suffix in (".csv", ".tsv") and Path(argument).is_file():
                items += read_text_inputs(csv_file=argument, column=text_column)
            elif suffix == ".txt" and Path(argument).is_file():
                items += read_text_inputs(text_file=argument)
            else:
                items += [(f"arg {len(items) + 1}", argument)]
        items += read_text_inputs(text_file=text_file) if text_file else []
        if not items:
            raise ValueError("no texts given: add texts, a .txt file (one per line) or a .csv with a text column")
        return items, []

    def prediction_input(self, payload):
        from engine.modalities.text.predict import read_text_input
        return read_text_input(payload)

    def prediction_fields(self, payload) -> dict:
        return {"text": payload}

    # -- the deep check -----------------------------------------------------------------------------------
    copy_measure = "the texts' characters (difflib's ratio, case and spacing ignored)"
    copy_limit = 0.9

    def frozen_features(self, report, samples, backbone: str, *, seed: int = 0, control=None, progress=None,
                        device=None):
        from engine.core.control import RunControl
        from engine.core.progress import no_progress
        from engine.modalities.text.inputs import EmbeddingCache
        from engine.modalities.text.model import create_text_model
        bundle = create_text_model(backbone, len(report.classes))
        if device is not None and device.type != "cpu":
            bundle.model.to(device)           # the cache encodes each batch where the model is
        cache = EmbeddingCache(bundle.model, bundle.tokenizer)
        return cache.embeddings([s.text or "" for s in samples], control or RunControl(), progress or no_progress)

    def audit_signatures(self, samples, *, control=None, progress=None):
        from engine.modalities.text.audit import normalised
        return [normalised(s.text or "") for s in samples]

    def odd_samples(self, samples, signatures) -> dict[int, str]:
        from engine.modalities.text.audit import odd_text_reasons
        return odd_text_reasons([s.text or "" for s in samples])

    def copy_similarity(self, samples, signatures, pairs):
        import numpy as np

        from engine.modalities.text.audit import text_similarity
        return np.array([text_similarity(signatures[a], signatures[b]) for a, b in pairs])

    # -- the window ---------------------------------------------------------------------------------------
    sample_view = TEXT_VIEW
    combines_sources = False
    blocks_noun = "layers"
    layer_tree_depth = 3
    own_settings = ("max_tokens",)
    settings_key = "model/text_encoder"

    def table_columns(self, source) -> dict:
        """A CSV/TSV/JSONL's columns and the reader's guesses; {} for a folder (or a file it cannot read)."""
        from pathlib import Path

        from engine.modalities.text.data import text_columns
        if Path(source).is_dir():
            return {}
        try:
            return text_columns(source)
        except Exception:  # noqa: BLE001 - the scan read this file already: no chooser rather than no report
            return {}

    def problem_file(self, root, where: str):
        """'reviews.csv:row 14' or 'pos/a.txt', under the dataset's root (a file or a folder)."""
        from pathlib import Path
        name = where.rsplit(":row ", 1)[0]
        base = Path(root)
        if Path(name).is_absolute():
            return Path(name)
        if base.is_file():
            return base if base.name == name else base.parent / name
        return base / name

    def input_size_words(self, size: int) -> str:
        return f"{size} tokens per text"

    def backbone_title(self, name: str) -> str:
        """A model folder by its folder's name."""
        from pathlib import Path
        return Path(name).name

    def training_speed_hint(self, model) -> str:
        """Head only trains on sentence vectors computed once, the last layers on hidden states computed once
        (engine.modalities.text.inputs); anything else runs the encoder on every text every epoch."""
        from engine.modalities.text.inputs import activation_boundary
        from engine.training.caches import classifier_parameter_names
        head = set(classifier_parameter_names(model))
        if all(name in head for name, p in model.named_parameters() if p.requires_grad):
            return "Fast: the encoder reads each text once, then only the head trains (seconds)."
        if activation_boundary(model) is not None:
            return ("Faster: the frozen layers read each text once; each epoch runs only the layers that train "
                    "(about a minute per epoch for 1,000 texts on a 2-core CPU).")
        return "Every epoch runs the encoder on every text: minutes per epoch on a CPU."

    def layer_model(self, name: str, num_classes: int):
        """The encoder as its folder holds it; the input size is the tokens kept per text."""
        from engine.modalities.text.model import create_text_model
        bundle = create_text_model(name, num_classes)
        return bundle.model, bundle.tokenizer.max_tokens


TEXTS = TextModality()
