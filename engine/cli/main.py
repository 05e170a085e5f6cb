"""Headless command line: `inspect`, `models`, `assess`, `train` (also `--auto`), `demo`, `predict`, `export`.

Exit status: 0 success, 2 bad input (one line on stderr, no traceback), 1 anything else.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from engine import __version__
from engine.cli import outputs
from engine.cli.progress import TerminalProgress
from engine.core.errors import first_line, readable_error
from engine.core.files import write_text
from engine.core.runfolder import DATASET_REPORT, RunFolder
from engine.models.presets import parse_freeze
from engine.training.config import CHOICES, TrainConfig

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


class BadInput(Exception):
    """Raised by commands for a user mistake: reported as one line, exit status 2."""


def _bad_input_types() -> tuple[type[BaseException], ...]:
    """Errors that mean "the input is wrong": every input error of the engine is a ValueError (DatasetError,
    ModelError, CheckpointError, WeightsError, ExportError, ModelFileError, bad settings), plus unreadable
    images and missing files."""
    from engine.data.images import ImageError     # Pillow only: `--help` stays instant
    return BadInput, ValueError, FileNotFoundError, ImageError


# -- commands ---------------------------------------------------------------------------------------
def cmd_inspect(args) -> int:
    with TerminalProgress() as progress:
        report = scan_any(args.data, TrainConfig(seed=args.seed), progress, args)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.format_text())
    return EXIT_OK


def cmd_models(args) -> int:
    from engine.models.catalog import list_backbones
    rows = list_backbones()
    if args.json:
        from engine.models.text_catalog import list_text_encoders
        print(json.dumps(rows + [{**r, "modality": "text"} for r in list_text_encoders()], indent=2))
        return EXIT_OK
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        state = f"offline weights: yes ({r['weights_source']})" if r["weights_available"] else \
            f"offline weights: no  ({r['hint']})"
        print(f"{r['name']:<{width}}  {r['title']:<42}  {state}")
    from engine.models.text_catalog import list_text_encoders
    print("\ntext encoders (for a CSV/TSV/JSONL of texts, or folders of .txt; or any Hugging Face model folder):")
    for r in list_text_encoders():
        state = "installed" if r["available"] else f"not installed ({r['hint']})"
        print(f"{r['name']:<{width}}  {r['title']:<42}  {state}")
    from engine.core.device import describe_device, resolve_device
    print(f"\ndevice: --device auto runs on {describe_device(resolve_device('auto'))}")
    return EXIT_OK


def _config_from_args(args) -> TrainConfig:
    preset, blocks = parse_freeze(args.freeze)
    values = {name: getattr(args, name) for name, _ in TRAIN_OPTIONS}
    config = TrainConfig(**values, backbone=args.model, freeze=preset, freeze_blocks=blocks or 2,
                         weights="random" if args.from_scratch else args.weights)
    if args.recipe == "two-stage":
        config.head_epochs = min(max(1, args.epochs // 3), args.epochs - 1) if args.epochs > 1 else 1
    config.validate()
    return config


def _read_config_file(path: str) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInput(f"cannot read the config {path}: {first_line(exc)}") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path} is not a training config (a JSON object)")
    return data


def _config_from_file(path: str, data: dict | None = None) -> TrainConfig:
    """A run's config.json (e.g. the winner of `--auto`): every training choice, the flags' ignored.
    `data`: the file's contents when already read."""
    data = _read_config_file(path) if data is None else data
    if "ensemble" in data:
        raise BadInput(f"{path} is an ensemble's config: train it with `train DATA --out RUN --config` "
                       "in one process (each member in turn)")
    config = TrainConfig.from_dict(data)
    config.validate()
    return config


def _train_ensemble(args, data: dict) -> int:
    """`train DATA --out RUN --config ENSEMBLE/config.json`: each member's recipe trained again, combined
    and tested as the search did (engine.search.ensemble)."""
    from engine.search.ensemble import member_configs, train_ensemble
    if args.auto:
        raise BadInput("--config with an ensemble trains that ensemble: leave out --auto")
    if _is_text_data(args.data):
        raise BadInput("ensembles combine image classifiers; a text dataset trains one model")
    try:
        configs = member_configs(data)
    except ValueError as exc:
        raise BadInput(f"{args.config}: {first_line(exc)}") from None
    for config in configs:
        _check_device(config.device)
    out = Path(args.out)
    with TerminalProgress() as progress:
        report = scan_any(args.data, configs[0], progress, args)
        _print_problem_summary(report)
        metrics = train_ensemble(report, configs, out, [progress], progress=progress)
    write_text(RunFolder(out).dataset_report, report.format_text() + "\n")
    print(json.dumps({"status": "completed", "run_dir": str(out), "checkpoint": str(RunFolder(out).checkpoint),
                      "val_accuracy": metrics.get("val_accuracy"), "test_accuracy": metrics.get("test_accuracy"),
                      "members": len(configs)}))
    return EXIT_OK


def cmd_train(args) -> int:
    from engine.cli.torchrun import launched_by_torchrun, train_distributed
    if launched_by_torchrun():
        return train_distributed(args)       # one of the processes `torchrun ... main.py train` started
    if args.resume:
        return _resume(args)
    if not args.data or not args.out:
        raise BadInput("train needs DATA and --out RUN (or --resume RUN to continue a run)")
    data = _read_config_file(args.config) if args.config else None
    if data is not None and "ensemble" in data:
        return _train_ensemble(args, data)
    config = _config_from_file(args.config, data) if data is not None else _config_from_args(args)
    config = _config_for_data(config, args)
    _check_device(config.device)
    budget = _budget(args)
    out = Path(args.out)
    with TerminalProgress() as progress:
        report = scan_any(args.data, config, progress, args)
        _print_problem_summary(report)
        summary = _search(report, config, out, budget, progress) if args.auto else _fit(report, config, out, progress)
    write_text(RunFolder(out).dataset_report, report.format_text() + "\n")
    print(json.dumps(summary))
    return EXIT_OK if summary["status"] != "cancelled" else EXIT_FAILURE


def _check_device(name: str):
    """The torch device `name` means here; DeviceUnavailable (bad input: one line, exit 2) before any work
    when it is not on this machine."""
    from engine.core.device import resolve_device
    return resolve_device(name)


def _resume(args) -> int:
    """`train --resume RUN [DATA]`: continue RUN with its own settings on its own data (DATA when the
    images moved); the end is as for a normal train."""
    from engine.training.runstate import check_resume, load_run_config, recorded_data_path
    _refuse_options_with_resume(args)
    run = Path(args.resume)
    check_resume(run)                              # a finished or running run is refused before any work
    config = load_run_config(run)
    data = args.data or recorded_data_path(run)
    if not data:
        raise BadInput(f"{run} does not record where its images are: give DATA after --resume RUN")
    with TerminalProgress() as progress:
        report = scan_any(data, config, progress)
        _print_problem_summary(report)
        summary = _fit(report, config, run, progress, resume=True)
    write_text(RunFolder(run).dataset_report, report.format_text() + "\n")
    print(json.dumps(summary))
    return EXIT_OK if summary["status"] != "cancelled" else EXIT_FAILURE


def _refuse_options_with_resume(args) -> None:
    """A resumed run keeps its own settings: options that would change them are a mistake, said so."""
    defaults = build_parser().parse_args(["train", "--resume", "RUN"])
    given = [f"--{name.replace('_', '-')}" for name in (*(n for n, _ in TRAIN_OPTIONS), "model", "weights",
                                                         "from_scratch", "freeze", "out", "auto", "budget",
                                                         "config")
             if getattr(args, name) != getattr(defaults, name)]
    if given:
        raise BadInput(f"--resume continues the run with its own settings: leave out {', '.join(given)}")


def _budget(args) -> float | None:
    if not args.auto:
        if args.budget is not None:
            raise BadInput("--budget is for --auto: add --auto to search for a recipe")
        return None
    from engine.search.auto import DEFAULT_BUDGET_S, parse_budget
    return parse_budget(args.budget) if args.budget is not None else DEFAULT_BUDGET_S


def _fit(report, config: TrainConfig, out: Path, progress: TerminalProgress, resume: bool = False) -> dict:
    from engine.training.datasets import trainer_class
    Trainer = trainer_class(report)
    return fit_summary(Trainer(report, config, out, [progress], resume=resume).fit(), out)


def _is_text_data(data) -> bool:
    from engine.training.datasets import is_text_data
    return is_text_data(data)


def _config_for_data(config: TrainConfig, args) -> TrainConfig:
    """A text dataset trains a text encoder: the default image backbone becomes the default encoder; an
    image backbone asked for by name, or an encoder for images, is a mistake said in one line."""
    from engine.models.catalog import DEFAULT_BACKBONE
    from engine.models.text_catalog import DEFAULT_TEXT_ENCODER, TEXT_ENCODERS
    text = _is_text_data(args.data)
    if text and config.modality == "image":
        if config.backbone != DEFAULT_BACKBONE:
            names = ", ".join(spec.name for spec in TEXT_ENCODERS)
            raise BadInput(f"{args.data} holds texts: --model must be a text encoder ({names}) or a Hugging "
                           f"Face model folder, not the image backbone {config.backbone}")
        config.backbone = DEFAULT_TEXT_ENCODER
    elif not text and config.modality == "text":
        raise BadInput(f"{config.backbone} encodes texts, but {args.data} holds images")
    return config


def scan_any(data, config: TrainConfig, progress, args=None):
    """The dataset report of images or texts (engine.training.datasets), with the text column options."""
    from engine.training.datasets import scan_any as scan
    columns = {name: getattr(args, name, None) for name in ("text_column", "label_column", "split_column")}
    return scan(data, seed=config.seed, encoder=config.backbone, max_tokens=config.max_tokens, progress=progress,
                **columns)


def fit_summary(result, out: Path) -> dict:
    """The one JSON line `train` prints at the end."""
    metrics = result.metrics
    return {"status": result.status, "run_dir": str(out), "checkpoint": result.checkpoint,
            "val_accuracy": metrics.get("val_accuracy"), "test_accuracy": metrics.get("test_accuracy")}


def _search(report, config: TrainConfig, out: Path, budget: float, progress: TerminalProgress) -> dict:
    if report.modality == "text":
        from engine.search.text_search import TextRecipeSearch as RecipeSearch
    else:
        from engine.search.auto import RecipeSearch
    result = RecipeSearch(report, out, budget, config, [progress]).run()
    for line in [f"decision: {result.decision}", *(f"note: {warning}" for warning in result.warnings)]:
        print(f"[search] {line}", file=sys.stderr)
    metrics = result.metrics
    return {"status": result.status, "run_dir": str(out), "checkpoint": str(RunFolder(out).checkpoint),
            "val_accuracy": metrics.get("val_accuracy"), "test_accuracy": metrics.get("test_accuracy"),
            "winner": result.winner, "seconds": round(result.seconds, 1)}


def cmd_assess(args) -> int:
    from engine.data.scan import scan_dataset
    from engine.search.assess import assess_backbones, format_table, summary
    backbones = [name.strip() for name in args.models.split(",")] if args.models else None
    device = _check_device(args.device)
    with TerminalProgress() as progress:
        report = scan_dataset(args.data, seed=args.seed, progress=progress)
        results = assess_backbones(report, backbones, args.seed, progress=progress, device=device)
    if args.json:
        print(json.dumps({"assessments": [a.to_dict() for a in results], "summary": summary(results)}, indent=2))
    else:
        print(format_table(results))
        print()
        print(summary(results))
    return EXIT_OK


def _print_problem_summary(report) -> None:
    if report.problems:
        print(f"{len(report.problems)} dataset problem(s); see {DATASET_REPORT} in the run folder",
              file=sys.stderr)


def cmd_demo(args) -> int:
    from engine.core.paths import demo_dataset, user_data_dir
    args.data = str(demo_dataset())
    args.out = args.out or str(user_data_dir() / "runs" / "demo")
    print(f"demo: training on {args.data} → {args.out}", file=sys.stderr)
    return cmd_train(args)


# -- parser -----------------------------------------------------------------------------------------
def add_device_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda|cuda:N|mps",
                   help="where the model runs: auto = a CUDA GPU, else Apple MPS, else the CPU (default: auto)")


TRAIN_OPTIONS = (
    ("epochs", "passes over the training images"),
    ("batch_size", "images per step"),
    ("image_size", "input size in pixels (default: the backbone's own)"),
    ("lr", "learning rate of the head; deeper layers get smaller rates"),
    ("optimizer", "lbfgs: solve the linear head exactly (logistic regression, its L2 strength chosen by "
                  "cross-validation on the training images); head only"),
    ("schedule", "learning-rate schedule after a one-epoch warm-up"),
    ("recipe", "two-stage: train the head first, then unfreeze per --freeze at a lower rate"),
    ("augmentation", "flip: each image or its mirror image (on cached features: both, computed once); "
                     "light/strong: random crops, flips and colour changes"),
    ("head", "mlp: a hidden layer of up to 512 units between the backbone's features and the classes"),
    ("tta", "flip: predict with the mean of the image's and its mirror image's logits (twice the compute; "
            "kept in the exported model)"),
    ("cached_views", "versions of each image cached for head-only/last-blocks training: 1 = as it is "
                     "(measured best); more are augmented, each costing one pass of the frozen layers"),
    ("label_smoothing", None),
    ("balance", "counter class imbalance by weighting the loss or resampling"),
    ("early_stopping", "stop after this many epochs without a better validation accuracy (0: off)"),
    ("checkpoint", "last: keep the last epoch, so the validation accuracy reported is not the one that picked "
                   "it (measured as accurate on test as best); best: keep the epoch best on validation"),
    ("cache", "reuse the frozen layers' output between epochs (auto) or not (off)"),
    ("frozen_runtime", "engine of the frozen layers' single pass: auto = ONNX Runtime (1.3-1.5x PyTorch's "
                       "speed) on a CPU when the fit has enough images to pay for its export, pytorch = never"),
    ("seed", None),
    ("max_tokens", "texts: tokens kept of each text (default: the encoder's own length, 256 for MiniLM)"),
    ("device", "where the model runs: auto = a CUDA GPU, else Apple MPS, else the CPU; or cpu, cuda, "
               "cuda:N, mps (a device that is not there is an error)"),
)
"""TrainConfig fields offered as `--field-name`: type, default and choices come from TrainConfig itself."""


def _add_train_options(p: argparse.ArgumentParser) -> None:
    defaults = TrainConfig()
    p.add_argument("--model", default=defaults.backbone,
                   help="backbone name (see `models`); for texts a text encoder or a Hugging Face model folder "
                        "(default for texts: all-minilm-l6-v2)")
    p.add_argument("--weights", default=defaults.weights,
                   help="'pretrained' (offline ImageNet weights) or a .safetensors/.pth file")
    p.add_argument("--from-scratch", action="store_true", help="random initial weights (for comparison)")
    p.add_argument("--freeze", default=defaults.freeze, help="head | all-but-last-N | none (default: head)")
    for name, help_text in TRAIN_OPTIONS:
        default = getattr(defaults, name)
        kind = int if name in ("image_size", "max_tokens") else type(default)
        shown = f"(default: {default})" if default is not None else ""
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default, choices=CHOICES.get(name),
                       help=" ".join(filter(None, (help_text, shown))))


def _add_text_column_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--text-column", default=None, help="texts: the column holding the text (default: detected)")
    p.add_argument("--label-column", default=None, help="texts: the column holding the label (default: detected)")
    p.add_argument("--split-column", default=None,
                   help="texts: a column of train/val/test (default: detected, else a seeded split)")


def build_parser() -> argparse.ArgumentParser:
    """The whole CLI; imports no torch, so `--help` and `--version` answer at once."""
    parser = argparse.ArgumentParser(prog="transferlab", description="Transfer learning for image folders.")
    parser.add_argument("--version", action="version", version=f"TransferLab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="print the dataset report")
    p.add_argument("data", help="folder, split folder, CSV of path,label, or .zip; or texts (CSV/TSV/JSONL with "
                                "a text and a label column, folders of .txt files)")
    _add_text_column_options(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("models", help="list backbones and whether their weights are available offline")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("train", help="fine-tune a backbone on a dataset")
    p.add_argument("data", nargs="?", help="the dataset (with --resume: only when its images moved)")
    p.add_argument("--out", help="run folder to write")
    p.add_argument("--resume", metavar="RUN", default=None,
                   help="continue the interrupted, cancelled or failed run in RUN where it stopped, with its "
                        "own settings and data (no training options)")
    p.add_argument("--auto", action="store_true",
                   help="search for the best recipe (backbone, head, regularisation, flips, last blocks) within "
                        "--budget; the training flags set its starting point")
    p.add_argument("--budget", default=None, help="time for --auto, e.g. 90s, 10m, 1h (default: 10m)")
    p.add_argument("--config", default=None,
                   help="a run's config.json (e.g. an --auto winner's): train exactly that recipe; other "
                        "training flags are ignored")
    _add_train_options(p)
    _add_text_column_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("assess", help="how well each pretrained backbone fits a dataset, before training")
    p.add_argument("data")
    p.add_argument("--models", default=None, help="comma-separated backbones (default: all with offline weights)")
    p.add_argument("--seed", type=int, default=0)
    add_device_option(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_assess)

    p = sub.add_parser("demo", help="train on the bundled demo dataset")
    p.add_argument("--out", default=None)
    _add_train_options(p)
    p.set_defaults(func=cmd_demo, epochs=5, auto=False, budget=None, config=None, resume=None)

    outputs.register(sub)
    return parser


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
        print(f"failed: {readable_error(exc)}", file=sys.stderr)
        return EXIT_FAILURE
