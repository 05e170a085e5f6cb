"""One entry point for whatever a user drops, images or texts: its report (the Trainer then picks the
inputs for it, engine.training.inputs.inputs_for).

The window and the command line both call these, so a text file and a photo folder take the same path
from a drop to a run folder. Texts are scanned with the encoder's own tokenizer, so the report says how
many texts that encoder will truncate.
"""
from __future__ import annotations

from engine.core.control import RunControl
from engine.core.progress import Progress
from engine.data.report import DatasetReport


def is_text_data(source) -> bool:
    from engine.data.texts import is_text_dataset
    return bool(source) and is_text_dataset(source)


def scan_any(source, *, seed: int = 0, encoder: str | None = None, max_tokens: int | None = None,
             text_column: str | None = None, label_column: str | None = None, split_column: str | None = None,
             progress: Progress | None = None, control: RunControl | None = None) -> DatasetReport:
    """The dataset report of `source`: engine.data.scan for images, engine.data.texts for texts (with
    `encoder`'s tokenizer counting long texts; default: the default text encoder)."""
    if not is_text_data(source):
        from engine.data.scan import scan_dataset
        return scan_dataset(source, seed=seed, progress=progress, control=control)
    from engine.data.texts import scan_texts
    from engine.models.text import tokenizer_from_folder
    from engine.models.text_catalog import DEFAULT_TEXT_ENCODER, encoder_folder, is_text_backbone
    encoder = encoder if is_text_backbone(encoder) else DEFAULT_TEXT_ENCODER
    tokenizer = tokenizer_from_folder(encoder_folder(encoder), max_tokens)
    return scan_texts(source, text_column=text_column, label_column=label_column, split_column=split_column,
                      seed=seed, token_counter=tokenizer.token_counts, max_tokens=tokenizer.max_tokens,
                      progress=progress, control=control)

