"""Process tuning: a user's own OpenMP settings win, and the malloc calls are safe to repeat."""
import subprocess
import sys
from pathlib import Path

import pytest

from engine.core import runtime


@pytest.mark.parametrize("given, expected", [({}, "PASSIVE"), ({"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE"),
                                             ({"GOMP_SPINCOUNT": "5"}, None)])
def test_openmp_threads_sleep_while_waiting_unless_the_user_chose(monkeypatch, given, expected):
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in given.items():
        monkeypatch.setenv(name, value)
    runtime.tune_process()
    assert runtime.os.environ.get("OMP_WAIT_POLICY") == expected


def test_malloc_tuning_applies_on_glibc_and_is_harmless_elsewhere():
    applied = runtime.tune_malloc()
    assert applied == (sys.platform.startswith("linux") and runtime._glibc() is not None)
    assert runtime.tune_malloc() == applied          # idempotent
    runtime.release_freed_memory()


def test_the_entry_point_tunes_the_process_before_torch_loads(monkeypatch):
    """OpenMP reads its wait policy when torch loads: main() must set it first."""
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(name, raising=False)
    code = ("import builtins, os, main\n"
            "seen, real_import = [], builtins.__import__\n"
            "def spy(name, *args, **kwargs):\n"
            "    if name.split('.')[0] == 'torch' and not seen:\n"
            "        seen.append(os.environ.get('OMP_WAIT_POLICY'))\n"
            "    return real_import(name, *args, **kwargs)\n"
            "builtins.__import__ = spy\n"
            "try:\n"
            "    main.main(['models'])\n"
            "except SystemExit:\n"
            "    pass\n"
            "print('policy when torch loaded:', seen)\n")
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "policy when torch loaded: ['PASSIVE']", done.stdout + done.stderr
