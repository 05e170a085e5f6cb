"""Kill harness: training killed with SIGKILL at seeded random moments resumes to exactly the result of the
same run never killed.

    .venv/bin/python bench/kill_harness.py [--points 20] [--seed 0] [--epochs 4]

Data: noisy solid-colour images generated on first use (3 classes x 16, 48 px; the engine carves val and
test). Recipe: `main.py train` two-stage, the head on cached features for one epoch, then the last block on
cached activations, 64 px, batch 4, with a training state after every batch (TRANSFERLAB_STATE_EVERY_S=0)
so that kills also land inside state writes.

First the run goes once without a kill, its timeline recorded (status file, end of the feature pass, each
epoch, exit). Then each point starts the same command in a fresh run folder and cache folder, kills it in a
phase taken in turn (the feature pass, mid-epoch, a checkpoint or state write caught as its temporary file
appears, the end: final evaluation and writes) at a seeded moment within it, checks that every file left
reads (JSON parses, safetensors load, last.json names an existing tensor file), resumes with
`main.py train --resume RUN` and compares history, metrics, predictions and checkpoint tensors with the
run never killed. Prints a table and writes bench/out/kill-harness.json. Not a timed test: it never fails.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import DATA, ROOT, machine    # first: it tunes the process before numpy and torch load

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

OUT = ROOT / "bench" / "out" / "kill-harness.json"
PHASES = ("feature pass", "mid-epoch", "write", "end")
WITHIN = 0.8        # of a phase's length in the reference run: runs vary, and a kill should land inside it
COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220)}


def colour_dataset(per_class: int = 16, size: int = 48) -> Path:
    root = DATA / f"kill-harness-colours-{per_class}-{size}"
    if not (root / ".done").exists():
        rng = np.random.default_rng(0)
        for name, rgb in COLOURS.items():
            (root / name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                noise = rng.integers(-40, 40, size=(size, size, 3))
                pixels = np.clip(np.array(rgb)[None, None, :] + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / name / f"{name}_{i:03d}.png")
        (root / ".done").touch()
    return root


class Training:
    """`main.py train` in a subprocess, its stderr lines timestamped by a reader thread."""

    def __init__(self, args: list[str], cache: Path):
        env = {**os.environ, "TRANSFERLAB_STATE_EVERY_S": "0", "TRANSFERLAB_CACHE_DIR": str(cache),
               "TRANSFERLAB_DATA_DIR": str(cache / "data")}
        self.started = time.monotonic()
        self.process = subprocess.Popen([sys.executable, str(ROOT / "main.py"), *args], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=env)
        self.lines: list[tuple[float, str]] = []
        self.stdout = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append((time.monotonic() - self.started, line.rstrip()))
        self.stdout = self.process.stdout.read()

    def seen(self, prefix: str) -> float | None:
        return next((t for t, line in self.lines if line.startswith(prefix)), None)

    def wait_for(self, condition, poll_s: float = 0.002) -> bool:
        """Wait until `condition()` holds; False when the process ended first."""
        while not condition():
            if self.process.poll() is not None:
                return False
            time.sleep(poll_s)
        return True

    def finish(self) -> int:
        code = self.process.wait()
        self._reader.join()
        return code


def epoch_line(epoch: int) -> str:
    return f"epoch {epoch:>3}"


def train_args(data: Path, run: Path, epochs: int) -> list[str]:
    return ["train", str(data), "--out", str(run), "--recipe", "two-stage", "--freeze", "all-but-last-1",
            "--epochs", str(epochs), "--image-size", "64", "--batch-size", "4"]


# -- the run never killed ------------------------------------------------------------------------------
def reference(data: Path, work: Path, epochs: int) -> dict:
    run = work / "reference"
    training = Training(train_args(data, run, epochs), work / "cache-reference")
    status_at = None
    while training.process.poll() is None:
        if status_at is None and (run / "status.json").exists():
            status_at = time.monotonic() - training.started
        time.sleep(0.002)
    exit_at = time.monotonic() - training.started
    if training.finish() != 0:
        raise SystemExit(f"the reference run failed:\n{chr(10).join(line for _, line in training.lines)}")
    timeline = {"status": status_at, "training": training.seen("training "), "exit": exit_at,
                "epochs": [training.seen(epoch_line(e)) for e in range(1, epochs + 1)]}
    return {"run": run, "files": run_files(run), "timeline": timeline}


def run_files(run: Path) -> dict:
    from safetensors.torch import load_file
    history = json.loads((run / "history.json").read_text())
    return {"history": [{k: v for k, v in logs.items() if k != "epoch_time_s"} for logs in history],
            "metrics": json.loads((run / "metrics.json").read_text()),
            "predictions": json.loads((run / "predictions.json").read_text()),
            "weights": load_file(str(run / "model.safetensors"))}


def identical(run: Path, expected: dict) -> bool:
    import torch
    got = run_files(run)
    return (got["history"] == expected["history"] and got["metrics"] == expected["metrics"]
            and got["predictions"] == expected["predictions"] and got["weights"].keys() == expected["weights"].keys()
            and all(torch.equal(got["weights"][k], expected["weights"][k]) for k in expected["weights"]))


# -- one kill point --------------------------------------------------------------------------------------
def temporary_files(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob(".*.tmp")) if run.exists() else []


def kill_at(training: Training, run: Path, phase: str, timeline: dict, rng: random.Random, epochs: int) -> str:
    """Wait for a moment in `phase` (seeded), then SIGKILL. Returns what was waited for, in words."""
    if phase == "feature pass":
        window = max(timeline["training"] - timeline["status"], 0.01)
        delay = rng.uniform(0, WITHIN * window)
        reached = training.wait_for(lambda: (run / "status.json").exists())
        how = f"{delay:.2f} s after the status file appeared (pass took {window:.2f} s)"
    elif phase == "mid-epoch":
        epoch = rng.randint(1, epochs - 1)
        delay = rng.uniform(0, timeline["epochs"][epoch] - timeline["epochs"][epoch - 1])
        reached = training.wait_for(lambda: training.seen(epoch_line(epoch)) is not None)
        how = f"{delay:.2f} s after epoch {epoch} ended"
    elif phase == "write":
        epoch, skips, seen, latest = rng.randint(0, epochs - 1), rng.randint(0, 8), set(), []

        def caught() -> bool:           # temporary names are unique: each new one is a write under way
            now = temporary_files(run)
            latest.extend(name for name in now if name not in seen)
            seen.update(now)
            return len(seen) > skips
        delay = 0.0
        reached = epoch == 0 or training.wait_for(lambda: training.seen(epoch_line(epoch)) is not None)
        reached = reached and training.wait_for(caught, poll_s=0.0005)
        how = (f"during write {skips + 1} after " + (f"epoch {epoch}" if epoch else "the start")
               + f" ({latest[-1] if latest else '-'})")
    else:
        delay = rng.uniform(0, WITHIN * max(timeline["exit"] - timeline["epochs"][-1], 0.01))
        reached = training.wait_for(lambda: training.seen(epoch_line(epochs)) is not None)
        how = f"{delay:.2f} s after the last epoch ended"
    if reached:
        time.sleep(delay)
    if training.process.poll() is not None:
        return how + " (the run had ended)"
    os.kill(training.process.pid, signal.SIGKILL)
    return how


def readable(run: Path) -> list[str]:
    """Files a kill left that do not read, or a last.json naming a missing file ([] when all is well)."""
    from safetensors.torch import load_file
    bad = []
    for path in run.rglob("*"):
        if path.name.endswith(".tmp"):
            continue
        try:
            if path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".safetensors":
                load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - any failure to read is what we count
            bad.append(f"{path.relative_to(run)}: {exc}")
    last = run / "state" / "last.json"
    if last.exists() and not bad:
        named = run / "state" / json.loads(last.read_text())["tensors"]
        if not named.exists():
            bad.append(f"state/last.json names a missing {named.name}")
    return bad


def state_found(run: Path) -> str:
    from engine.training.runstate import read_status
    last = run / "state" / "last.json"
    where = "no state yet"
    if last.exists():
        position = json.loads(last.read_text())["position"]
        where = f"epoch {position['epoch']}" + (f" + {position['batches_done']} batches"
                                                 if position["batches_done"] else "")
    return f"{read_status(run)}, {where}"


def kill_point(index: int, data: Path, work: Path, expected: dict, rng: random.Random, epochs: int) -> dict:
    phase = PHASES[index % len(PHASES)]
    run, cache = work / f"point-{index:02d}", work / f"cache-{index:02d}"
    training = Training(train_args(data, run, epochs), cache)
    how = kill_at(training, run, phase, expected["timeline"], rng, epochs)
    killed_at = time.monotonic() - training.started
    code = training.finish()
    row = {"point": index, "phase": phase, "moment": how, "killed_at_s": round(killed_at, 2),
           "killed": code == -signal.SIGKILL, "found": state_found(run), "left_over": temporary_files(run),
           "unreadable": readable(run)}
    started = time.monotonic()
    if row["killed"] and not row["found"].startswith("completed"):      # killed after its end: nothing to do
        resumed = Training(["train", "--resume", str(run)], cache)
        row["resume_exit"] = resumed.finish()
        if row["resume_exit"] != 0:
            row["resume_error"] = "\n".join(line for _, line in resumed.lines[-3:])
    row["resume_s"] = round(time.monotonic() - started, 1)
    row["identical"] = (run / "metrics.json").exists() and identical(run, expected["files"])
    row["left_after_resume"] = temporary_files(run) + (["state/"] if (run / "state").exists() else [])
    return row


# -- report -------------------------------------------------------------------------------------------------
def print_table(rows: list[dict]) -> None:
    header = ("#", "phase", "killed at", "found after the kill", "temp files left", "resumed", "identical")
    lines = [(str(r["point"]), r["phase"], f"{r['killed_at_s']:.1f} s" + ("" if r["killed"] else " (ended)"),
              r["found"], str(len(r["left_over"])),
              f"exit {r['resume_exit']} in {r['resume_s']} s" if "resume_exit" in r else "not needed",
              "yes" if r["identical"] else "NO") for r in rows]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("-" * (sum(widths) + 2 * len(widths)))
    for line in lines:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    data = colour_dataset()
    with tempfile.TemporaryDirectory(prefix="tl-kill-harness-") as tmp:
        work = Path(tmp)
        began = time.monotonic()
        expected = reference(data, work, args.epochs)
        print(f"reference run: {expected['timeline']['exit']:.1f} s; timeline {expected['timeline']}")
        rows = []
        for index in range(args.points):
            rows.append(kill_point(index, data, work, expected, rng, args.epochs))
            row = rows[-1]
            print(f"point {index}: {row['phase']}, {row['moment']}: {row['found']}; "
                  f"identical={row['identical']}", flush=True)
    killed = [r for r in rows if r["killed"]]
    summary = {"kill_points_tried": len(rows), "killed": len(killed),
               "resumed_identical": sum(r["identical"] for r in killed),
               "corrupt_files": sum(len(r["unreadable"]) for r in rows),
               "left_after_resume": sum(len(r["left_after_resume"]) for r in rows)}
    print(f"\nKill harness: {args.points} points, seed {args.seed}, {args.epochs} epochs "
          f"({time.monotonic() - began:.0f} s)\n{machine()}")
    print_table(rows)
    print(f"\n{summary}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"machine": machine(), "seed": args.seed, "epochs": args.epochs,
                               "recipe": train_args(Path("DATA"), Path("RUN"), args.epochs)[3:],
                               **summary, "rows": rows}, indent=2) + "\n")
    print(f"written {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
