"""Headless command line: `inspect`, `models`, `train`, `demo`, `predict`, `export`.

Exit status: 0 success, 2 bad input (one line on stderr, no traceback), 1 anything else.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from engine import __version__
from engine.core.errors import first_line
from engine.core.runfolder import RunFolder

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


class BadInput(Exception):
    """Raised by commands for a user mistake: reported as one line, exit status 2."""


def _bad_input_types() -> tuple[type[BaseException], ...]:
    """Errors that mean "the input is wrong", imported lazily so `--help` stays instant."""
    from engine.models.checkpoint import CheckpointError
    from engine.data.dataset import DatasetError
    from engine.data.images import ImageError
    from engine.models.catalog import ModelError
    from engine.models.weights import WeightsError
    types = [BadInput, DatasetError, ModelError, CheckpointError, WeightsError, ImageError,
             FileNotFoundError, ValueError]
    try:
        from engine.outputs.export import ExportError
        types.append(ExportError)
    except ImportError:
        pass
    return tuple(types)


# -- commands ---------------------------------------------------------------------------------------
def cmd_inspect(args) -> int:
    from engine.data.dataset import scan_dataset
    report = scan_dataset(args.data, seed=args.seed)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.format_text())
    return EXIT_OK


def cmd_models(args) -> int:
    from engine.models.catalog import list_backbones
    rows = list_backbones()
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        state = f"offline weights: yes ({r['weights_source']})" if r["weights_available"] else \
            f"offline weights: no  ({r['hint']})"
        print(f"{r['name']:<{width}}  {r['title']:<42}  {state}")
    return EXIT_OK


def _config_from_args(args):
    from engine.models.presets import parse_freeze
    from engine.training.config import TrainConfig
    preset, blocks = parse_freeze(args.freeze)
    config = TrainConfig(backbone=args.model, epochs=args.epochs, batch_size=args.batch_size,
                         image_size=args.image_size, seed=args.seed, freeze=preset,
                         freeze_blocks=blocks or 2, augmentation=args.augmentation, recipe=args.recipe,
                         optimizer=args.optimizer, schedule=args.schedule, cache=args.cache,
                         label_smoothing=args.label_smoothing, early_stopping=args.early_stopping,
                         balance=args.balance, weights="random" if args.from_scratch else args.weights,
                         cached_views=args.cached_views)
    if args.lr is not None:
        config.lr = args.lr
    if args.recipe == "two-stage":
        config.head_epochs = min(max(1, args.epochs // 3), args.epochs - 1) if args.epochs > 1 else 1
    config.validate()
    return config


def cmd_train(args) -> int:
    from engine.core.callbacks import ConsoleProgress
    from engine.data.dataset import scan_dataset
    from engine.training.trainer import Trainer
    config = _config_from_args(args)
    report = scan_dataset(args.data, seed=args.seed)
    _print_problem_summary(report)
    out = Path(args.out)
    result = Trainer(report, config, out, [ConsoleProgress()]).fit()
    RunFolder(out).dataset_report.write_text(report.format_text() + "\n", encoding="utf-8")
    metrics = result.metrics
    summary = {"status": result.status, "run_dir": str(out), "checkpoint": result.checkpoint,
               "val_accuracy": metrics.get("val_accuracy"), "test_accuracy": metrics.get("test_accuracy")}
    print(json.dumps(summary))
    return EXIT_OK if result.status != "cancelled" else EXIT_FAILURE


def _print_problem_summary(report) -> None:
    if report.problems:
        print(f"{len(report.problems)} dataset problem(s); see dataset_report.txt in the run folder",
              file=sys.stderr)


def cmd_demo(args) -> int:
    from engine.core.paths import demo_dataset, user_data_dir
    args.data = str(demo_dataset())
    args.out = args.out or str(user_data_dir() / "runs" / "demo")
    print(f"demo: training on {args.data} → {args.out}", file=sys.stderr)
    return cmd_train(args)


# -- parser -----------------------------------------------------------------------------------------
def _add_train_options(p: argparse.ArgumentParser) -> None:
    from engine.models.catalog import DEFAULT_BACKBONE
    p.add_argument("--model", default=DEFAULT_BACKBONE, help="backbone name (see `models`)")
    p.add_argument("--weights", default="pretrained",
                   help="'pretrained' (offline ImageNet weights) or a .safetensors/.pth file")
    p.add_argument("--from-scratch", action="store_true", help="random initial weights (for comparison)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--freeze", default="head", help="head | all-but-last-N | none (default: head)")
    p.add_argument("--recipe", default="single", choices=["single", "two-stage"],
                   help="two-stage: train the head first, then unfreeze per --freeze at a lower rate")
    p.add_argument("--image-size", type=int, default=None, help="input size in pixels (default: the model's)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=None, help="head learning rate (default 3e-3)")
    p.add_argument("--optimizer", default="adamw", choices=["adamw", "sgd"])
    p.add_argument("--schedule", default="cosine", choices=["cosine", "onecycle", "constant"])
    p.add_argument("--augmentation", default="light", choices=["none", "light", "strong"])
    p.add_argument("--cached-views", type=int, default=1, metavar="N",
                   help="versions of each image cached for head-only/last-blocks training: 1 = as it is "
                        "(default, measured best); more are augmented, each costing one feature pass")
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--balance", default="none", choices=["none", "loss", "sampler"])
    p.add_argument("--early-stopping", type=int, default=0, metavar="PATIENCE")
    p.add_argument("--cache", default="auto", choices=["auto", "off"],
                   help="reuse frozen-backbone features between epochs (auto) or not")
    p.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="transferlab", description="Transfer learning for image folders.")
    parser.add_argument("--version", action="version", version=f"TransferLab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="print the dataset report")
    p.add_argument("data", help="folder, split folder, CSV of path,label, or .zip")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("models", help="list backbones and whether their weights are available offline")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("train", help="fine-tune a backbone on a dataset")
    p.add_argument("data")
    p.add_argument("--out", required=True, help="run folder to write")
    _add_train_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("demo", help="train on the bundled demo dataset")
    p.add_argument("--out", default=None)
    _add_train_options(p)
    p.set_defaults(func=cmd_demo, epochs=5)

    for register in _optional_commands():
        register(sub)
    return parser


def _optional_commands():
    """Commands living in their own modules (export, predict), registered when present."""
    registrars = []
    for module_name in ("engine.cli.outputs",):
        try:
            module = __import__(module_name, fromlist=["register"])
            registrars.append(module.register)
        except ImportError:
            continue
    return registrars


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:  # noqa: BLE001 - the CLI's promise: one line, never a traceback
        if isinstance(exc, _bad_input_types()):
            print(f"error: {first_line(exc)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        logging.getLogger("transferlab").exception("command %s failed", args.command)
        print(f"failed: {type(exc).__name__}: {first_line(exc)}", file=sys.stderr)
        return EXIT_FAILURE
