"""One entry point for whatever a user drops, images or texts: its report (the Trainer then picks the
inputs for it, engine.training.inputs.inputs_for).

The window and the command line both call these, so a text file and a photo folder take the same path
from a drop to a run folder. Texts are scanned with the encoder's own tokenizer, so the report says how
many texts that encoder will truncate.
"""
from __future__ import annotations

from engine.core import modality as modalities
from engine.core.control import RunControl
from engine.core.progress import Progress
from engine.data.report import DatasetReport


def scan_any(source, *, seed: int = 0, encoder: str | None = None, max_tokens: int | None = None,
             text_column: str | None = None, label_column: str | None = None, split_column: str | None = None,
             progress: Progress | None = None, control: RunControl | None = None) -> DatasetReport:
    """The dataset report of `source`, read by the modality whose reader takes it (engine.core.modality).
    `encoder` is the model the data will train: texts count their tokens with its tokenizer (a text dataset
    with no text encoder given is counted with the default one); the column names are the text reader's."""
    options = {name: value for name, value in (("max_tokens", max_tokens), ("text_column", text_column),
                                                ("label_column", label_column), ("split_column", split_column))
               if value is not None}
    return modalities.for_source(source).scan(source, seed=seed, backbone=encoder, progress=progress,
                                              control=control, **options)
