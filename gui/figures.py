"""How the window writes a share: "64.0 %", and the range its true value lies in 95 times out of 100."""
from __future__ import annotations

from engine.core.significance import wilson_interval


def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def interval_text(successes: int, count: int) -> str:
    """'(50–76)': the 95 % Wilson interval of `successes` out of `count`, in whole percent."""
    low, high = wilson_interval(successes, count)
    return f"({100 * low:.0f}–{100 * high:.0f})"
