"""The freeze presets, head kinds and test-time augmentations the Model step, the CLI, the trainer and the
checkpoint share, and the presets' command-line spelling. No torch, so the config can import them."""
from __future__ import annotations

import re

FREEZE_PRESETS = ("head", "last-n", "none")
HEADS = ("linear", "mlp")
TEST_TIME_AUGMENTATIONS = ("none", "flip")


def parse_freeze(text: str) -> tuple[str, int]:
    """CLI spelling → preset: 'head', 'none', or 'all-but-last-N' (N blocks plus the head train)."""
    if text in ("head", "none"):
        return text, 0
    match = re.fullmatch(r"all-but-last-(\d+)", text)
    if match:
        return "last-n", int(match.group(1))
    raise ValueError(f"--freeze must be head, none or all-but-last-N, not {text!r}")
