"""How much memory a cache may take on this machine, and sizes in words."""
from __future__ import annotations

import os

MEMORY_FRACTION = 0.25          # of physical RAM, for any one cache


def total_memory_bytes() -> int:
    """Physical RAM; 8 GiB when the platform does not say (Windows without psutil)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        pass
    try:
        import psutil
        return int(psutil.virtual_memory().total)
    except ImportError:
        return 8 * 2**30


def memory_budget() -> int:
    return int(total_memory_bytes() * MEMORY_FRACTION)


def format_bytes(n: float) -> str:
    if n < 1e6:
        return f"{n / 1e3:.0f} KB"
    return f"{n / 1e6:.0f} MB" if n < 1e9 else f"{n / 1e9:.1f} GB"
