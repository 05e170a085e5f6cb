"""Process tuning: a user's own OpenMP settings win, and the malloc calls are safe to repeat."""
import sys

import pytest

from engine import runtime


@pytest.mark.parametrize("given, expected", [({}, "10000"), ({"GOMP_SPINCOUNT": "5"}, "5"),
                                             ({"OMP_WAIT_POLICY": "ACTIVE"}, None)])
def test_a_short_openmp_spin_unless_the_user_chose(monkeypatch, given, expected):
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in given.items():
        monkeypatch.setenv(name, value)
    runtime.tune_process()
    assert runtime.os.environ.get("GOMP_SPINCOUNT") == expected


def test_malloc_tuning_applies_on_glibc_and_is_harmless_elsewhere():
    applied = runtime.tune_malloc()
    assert applied == (sys.platform.startswith("linux") and runtime._glibc() is not None)
    assert runtime.tune_malloc() == applied          # idempotent
    runtime.release_freed_memory()
