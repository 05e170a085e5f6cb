"""What the deep check reads of a text itself: its characters, to confirm a near-duplicate pair (the
same text with other spacing, case or a few words changed), and whether it is odd on its own."""
from __future__ import annotations

import difflib
import re

import numpy as np

SHORT_CHARACTERS = 3        # a text this short (after trimming) says almost nothing
LETTER_SHARE = 0.4          # under 40 % letters: numbers, code, markup or mojibake rather than prose
LONG_FACTOR = 20            # over 20 x the median length: likely several texts run together


def normalised(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def text_similarity(a: str, b: str) -> float:
    """difflib's ratio of two normalised texts (1: identical), cheap upper bounds first."""
    if a == b:
        return 1.0
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    if matcher.real_quick_ratio() < 0.8 or matcher.quick_ratio() < 0.8:
        return matcher.quick_ratio()
    return matcher.ratio()


def odd_text_reasons(texts: list[str]) -> dict[int, str]:
    lengths = np.array([len(t.strip()) for t in texts])
    median = float(np.median(lengths)) if len(lengths) else 0.0
    reasons = {}
    for index, text in enumerate(texts):
        stripped = text.strip()
        letters = sum(c.isalpha() for c in stripped)
        if len(stripped) < SHORT_CHARACTERS:
            reasons[index] = f"very short ({len(stripped)} characters)"
        elif letters < LETTER_SHARE * len(stripped):
            reasons[index] = f"mostly not words ({letters / len(stripped):.0%} letters)"
        elif median and len(stripped) > LONG_FACTOR * median:
            reasons[index] = f"very long ({len(stripped):,} characters, {len(stripped) / median:.0f}× the median)"
    return reasons
