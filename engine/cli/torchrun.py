"""`torchrun --nproc-per-node N main.py train DATA --out RUN ...`: one process's part of a distributed fit.

Every process scans the data (images or texts, as one-process `train` does) and trains its share
(engine.training.strategy.DistributedStrategy); process 0 alone shows progress, writes the run folder and
prints the summary line. A bad input is said once, by process 0 (every process meets it; the others wait
for torchrun to end them); a failure elsewhere is one line naming the process, and torchrun then ends the
others.
"""
from __future__ import annotations

import io
import json
import os
import sys
import time
from pathlib import Path

from engine.cli.common import (EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK, BadInput, bad_input_types, check_device,
                               config_for_data, config_from_args, config_from_file, fit_summary,
                               print_problem_summary, scan_data)
from engine.cli.progress import TerminalProgress
from engine.core.errors import first_line, readable_error
from engine.core.files import write_text
from engine.core.runfolder import RunFolder

BAD_INPUT_GRACE_S = 10.0     # how long another process waits for process 0 to report a bad input


def launched_by_torchrun() -> bool:
    if "WORLD_SIZE" not in os.environ:       # a plain run: answer without importing torch
        return False
    from engine.training.distributed import DistributedContext
    return DistributedContext.from_env(uses_cuda=False) is not None


def train_distributed(args) -> int:
    from engine.training.distributed import DistributedContext
    rank = DistributedContext.from_env(uses_cuda=False).rank
    try:
        return _train(args)
    except Exception as exc:  # noqa: BLE001 - process 0 reports through main(); the others in one line
        if rank == 0:
            raise
        if isinstance(exc, bad_input_types()):
            # process 0 meets the same input and says it; leaving first could get it ended by torchrun
            # before it does. Only a mistake this process alone met is said here.
            time.sleep(BAD_INPUT_GRACE_S)
            print(f"error in process {rank}: {first_line(exc)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(f"failed in process {rank}: {readable_error(exc)}", file=sys.stderr)
        return EXIT_FAILURE


def _train(args) -> int:
    from engine.training.distributed import DistributedContext, process_group
    from engine.training.strategy import DistributedStrategy
    from engine.training.trainer import Trainer
    if args.resume or args.auto or getattr(args, "unlabelled", None):
        which = "resume" if args.resume else "auto" if args.auto else "unlabelled"
        raise BadInput(f"--{which} runs in one process: start it without torchrun")
    if not args.data or not args.out:
        raise BadInput("train needs DATA and --out RUN")
    config = config_from_file(args.config) if args.config else config_from_args(args)
    config = config_for_data(config, args)
    device = check_device(config.device)
    context = DistributedContext.from_env(uses_cuda=device.type == "cuda")
    out = Path(args.out)
    quiet = {} if context.is_main else {"stream": io.StringIO(), "live": False}
    with process_group(context), DistributedStrategy(context) as strategy, TerminalProgress(**quiet) as progress:
        report = scan_data(args.data, config, progress, args)
        if context.is_main:
            print_problem_summary(report)
        result = Trainer(report, config, out, [progress], strategy=strategy).fit()
    status = EXIT_OK if result.status != "cancelled" else EXIT_FAILURE
    if context.is_main:
        write_text(RunFolder(out).dataset_report, report.format_text() + "\n")
        print(json.dumps(fit_summary(result, out)))
    return status
