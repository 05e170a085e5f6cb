"""Runtime settings, measured side by side: channels_last memory format (inference and training), the
OpenMP wait policy, and glibc malloc tuning (environment variables, or the same through mallopt at run
time).

    .venv/bin/python bench/bench_settings.py [--repeats 3] [--steps 1] [--process-steps 4] [--batch 16]

EfficientNet-Lite0 with its real ImageNet weights, on batches of real Fashion-MNIST photos. Training
steps are forward + backward + AdamW on every layer (a full fine-tune), on the main thread. The wait
policy and malloc variants run in fresh processes (OpenMP and glibc read their variables at start-up),
taking turns; malloc variants use the passive wait policy that engine.core.runtime.tune_process() sets,
as every other benchmark does. The 96 px variants show the wait policy where operations are short (small
inputs, cached activations), also while two other processes keep the cores busy (a browser, a build).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time

from common import Table, fashion_dataset, interleave, median, ratio

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(2**30),
              "MALLOC_TOP_PAD_": str(256 * 2**20), "MALLOC_ARENA_MAX": "1"}
SPIN, SHORT, PASSIVE = "spin (OpenMP default)", "GOMP_SPINCOUNT=10000", "OMP_WAIT_POLICY=PASSIVE"
WAITS = {SPIN: {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": None},
         SHORT: {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "10000"},
         PASSIVE: {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": None}}
WORKER = "worker thread, PASSIVE, default malloc"


def _processes() -> dict:
    """name -> env: changes (None: removed); tune: tune_malloc() first; size: input px; busy: other
    processes spinning meanwhile; thread: train on a second thread, as the GUI does; vs: compared with."""
    variants = {}
    for size, busy, label in ((None, 0, ""), (96, 0, "96 px: "), (96, 2, "96 px, 2 busy processes: ")):
        for wait, env in WAITS.items():
            variants[label + wait] = dict(env=env, size=size, busy=busy, vs=None if wait == SPIN else label + SPIN)
    passive = WAITS[PASSIVE]
    variants["PASSIVE + MALLOC_* variables set high"] = dict(env={**passive, **MALLOC_ENV}, vs=PASSIVE)
    variants["PASSIVE + tune_malloc() at start-up"] = dict(env=passive, tune=True, vs=PASSIVE)
    variants[WORKER] = dict(env=passive, thread=True, vs=PASSIVE)
    variants["worker thread, tune_malloc() at start-up"] = dict(env=passive, thread=True, tune=True, vs=WORKER)
    return variants


PROCESSES = _processes()


def real_batch(batch: int, image_size: int):
    import torch
    from engine.data.images import load_image
    from engine.data.preprocessing import Preprocessing
    from engine.data.transforms import eval_transform
    folder = fashion_dataset(10, 96)
    paths = sorted(p for p in folder.rglob("*.png"))[:batch]
    transform = eval_transform(Preprocessing(image_size, (0.5,) * 3, (0.5,) * 3, "bicubic"))
    return torch.stack([transform(load_image(p)) for p in paths]), torch.arange(batch) % 10


def make_model(image_size: int):
    from engine.models.catalog import create_model
    return create_model("efficientnet_lite0", 10, input_size=image_size).model


def train_steps(model, images, labels, steps: int) -> float:
    import torch
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    start = time.perf_counter()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def infer_steps(model, images, steps: int) -> float:
    import torch
    model.eval()
    start = time.perf_counter()
    with torch.inference_mode():
        for _ in range(steps):
            model(images)
    return time.perf_counter() - start


def child(args) -> None:
    """One malloc variant in a fresh process: prints seconds and user/system CPU of the timed steps."""
    variant = PROCESSES[args.child]       # common.py applied its tuning (TRANSFERLAB_BENCH_TUNING) already
    import torch
    size = variant.get("size") or args.image_size
    model = make_model(size).to(memory_format=torch.channels_last)
    images, labels = real_batch(args.batch, size)
    measured = {}

    def measure():
        train_steps(model, images, labels, 2)                           # warm-up
        measured["before"] = resource.getrusage(resource.RUSAGE_SELF)
        measured["seconds"] = train_steps(model, images, labels, args.process_steps)
        measured["after"] = resource.getrusage(resource.RUSAGE_SELF)

    if variant.get("thread"):
        worker = threading.Thread(target=measure)
        worker.start()
        worker.join()
    else:
        measure()
    before, seconds, after = measured["before"], measured["seconds"], measured["after"]
    print(json.dumps({"seconds": seconds, "user": after.ru_utime - before.ru_utime,
                      "system": after.ru_stime - before.ru_stime, "faults": after.ru_minflt - before.ru_minflt}))


def run_child(kind: str, args, usage: dict) -> float:
    env = dict(os.environ, TRANSFERLAB_BENCH_TUNING="malloc" if PROCESSES[kind].get("tune") else "none")
    for name, value in PROCESSES[kind]["env"].items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    command = [sys.executable, __file__, "--child", kind, "--process-steps", str(args.process_steps),
               "--batch", str(args.batch), "--image-size", str(args.image_size)]
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(PROCESSES[kind].get("busy", 0))]      # other programs wanting the cores
    try:
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    finally:
        for process in busy:
            process.kill()
            process.wait()
    result = json.loads(out.strip().splitlines()[-1])
    usage.setdefault(kind, []).append(result)
    return result["seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=1, help="training/inference batches per measurement")
    ap.add_argument("--process-steps", type=int, default=4, help="timed training batches per fresh process")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--child", choices=list(PROCESSES), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    import torch
    images, labels = real_batch(args.batch, args.image_size)
    model = make_model(args.image_size)
    formats = {"NCHW": torch.contiguous_format, "channels_last": torch.channels_last}

    def with_format(name, work):
        def run():
            model.to(memory_format=formats[name])
            return work(model, images.contiguous(memory_format=formats[name]))
        return run

    print(f"channels_last: {args.repeats} rounds of {args.steps} batches of {args.batch} at {args.image_size} px")
    layout = interleave({
        "inference NCHW": with_format("NCHW", lambda m, x: infer_steps(m, x, args.steps)),
        "inference channels_last": with_format("channels_last", lambda m, x: infer_steps(m, x, args.steps)),
        "training NCHW": with_format("NCHW", lambda m, x: train_steps(m, x, labels, args.steps)),
        "training channels_last": with_format("channels_last", lambda m, x: train_steps(m, x, labels, args.steps)),
    }, args.repeats)
    print("wait policy and malloc: fresh processes, channels_last training")
    usage: dict = {}
    processes = interleave({kind: (lambda kind=kind: run_child(kind, args, usage)) for kind in PROCESSES},
                           args.repeats)

    table = Table("Runtime settings (ratio = default time / variant time: the speed-up, higher is better)")
    images_per_run = args.steps * args.batch
    for task in ("inference", "training"):
        plain, fast = layout[f"{task} NCHW"], layout[f"{task} channels_last"]
        table.add(f"{task}: NCHW", f"{images_per_run / median(plain):.1f} img/s")
        table.add(f"{task}: channels_last", f"{images_per_run / median(fast):.1f} img/s", ratio(plain, fast),
                  cpu_ratio=ratio(layout.cpu[f"{task} NCHW"], layout.cpu[f"{task} channels_last"]))
    for kind, variant in PROCESSES.items():
        base = variant.get("vs")
        runs = usage[kind]
        value = (f"{args.process_steps * args.batch / median(processes[kind]):.1f} img/s, "
                 f"sys {median(u['system'] for u in runs):.2f} s, "
                 f"{median(u['faults'] for u in runs) / args.process_steps:,.0f} faults/step")
        if base is None:
            table.add(f"training: {kind}", value)
        else:
            table.add(f"training: {kind}", value, ratio(processes[base], processes[kind]),
                      cpu_ratio=ratio(processes.cpu[base], processes.cpu[kind]))
    table.print()


if __name__ == "__main__":
    main()
