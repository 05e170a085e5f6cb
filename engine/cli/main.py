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
from engine.cli.common import (EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK, TRAIN_OPTIONS, BadInput, bad_input_types,
                               check_device, config_for_data, config_from_args, config_from_file, fit_summary,
                               print_problem_summary, print_trust_summary, read_config_file, scan_data)
from engine.cli.progress import TerminalProgress
from engine.core.errors import first_line, readable_error
from engine.core.files import write_json, write_text
from engine.core.runfolder import RunFolder
from engine.training.config import CHOICES, TrainConfig


# -- commands ---------------------------------------------------------------------------------------
def cmd_inspect(args) -> int:
    device = check_device(args.device) if args.deep else None       # one that is not here: refused first
    with TerminalProgress() as progress:
        report = scan_data(args.data, TrainConfig(seed=args.seed), progress, args)
        deep = _deep_check(report, args, progress, device) if args.deep else None
        pool = _unlabelled_pool(report, args, progress) if args.unlabelled else None
    if args.json:
        found = deep.to_dict(args.data) if deep else report.to_dict()
        print(json.dumps({**found, "unlabelled": pool.to_dict()} if pool else found, indent=2))
    else:
        print(report.format_text())
        for part in (deep.format_text(args.data) if deep else None, pool.format_text() if pool else None):
            if part:
                print()
                print(part)
    return EXIT_OK


def _unlabelled_pool(report, args, progress):
    """The pool beside the dataset, as the window's Data step reads it: how many, what is wrong (unreadable,
    odd; already labelled), without a model."""
    from engine.active.pool import flag_pool, labelled_keys, read_pool
    from engine.core import modality as modalities
    modality = modalities.of(report)
    pool = read_pool(args.unlabelled, modality, labelled=labelled_keys(report), text_column=args.text_column)
    return flag_pool(pool, modality, progress=progress)


def _deep_check(report, args, progress, device):
    from engine.audit.deep import inspect_deep
    from engine.core import modality as modalities
    backbone = args.model or modalities.of(report).default_backbone
    modalities.of(report).check_backbone(backbone)
    return inspect_deep(report, backbone, seed=args.seed, progress=progress, device=device)


def cmd_models(args) -> int:
    from engine.core import modality as modalities
    from engine.models.catalog import list_backbones
    rows = list_backbones()
    if args.json:
        every = [row for modality in reversed(modalities.every()) for row in modality.backbone_rows()]
        print(json.dumps(every, indent=2))
        return EXIT_OK
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        state = f"offline weights: yes ({r['weights_source']})" if r["weights_available"] else \
            f"offline weights: no  ({r['hint']})"
        print(f"{r['name']:<{width}}  {r['title']:<42}  {state}")
    from engine.modalities.text.catalog import list_text_encoders
    print("\ntext encoders (for a CSV/TSV/JSONL of texts, or folders of .txt; or any Hugging Face model folder):")
    for r in list_text_encoders():
        state = "installed" if r["available"] else f"not installed ({r['hint']})"
        print(f"{r['name']:<{width}}  {r['title']:<42}  {state}")
    from engine.core.device import describe_device, resolve_device
    print(f"\ndevice: --device auto runs on {describe_device(resolve_device('auto'))}")
    return EXIT_OK


def _train_ensemble(args, data: dict) -> int:
    """`train DATA --out RUN --config ENSEMBLE/config.json`: each member's recipe trained again, combined
    and tested as the search did (engine.search.ensemble)."""
    from engine.search.ensemble import member_configs, train_ensemble
    if args.auto:
        raise BadInput("--config with an ensemble trains that ensemble: leave out --auto")
    try:
        configs = member_configs(data)
    except ValueError as exc:
        raise BadInput(f"{args.config}: {first_line(exc)}") from None
    for config in configs:
        check_device(config.device)
    out = Path(args.out)
    with TerminalProgress() as progress:
        report = scan_data(args.data, configs[0], progress, args)
        print_problem_summary(report)
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
    data = read_config_file(args.config) if args.config else None
    if data is not None and "ensemble" in data:
        return _train_ensemble(args, data)
    config = config_from_file(args.config, data) if data is not None else config_from_args(args)
    config = config_for_data(config, args)
    check_device(config.device)
    budget = _budget(args)
    out = Path(args.out)
    with TerminalProgress() as progress:
        report = scan_data(args.data, config, progress, args)
        print_problem_summary(report)
        pseudo = None
        if args.unlabelled and not args.auto:       # a search weighs them as one of its candidates
            report, config, pseudo = _pseudo_labels(report, config, args, progress)
        summary = (_search(report, config, out, budget, progress, args.unlabelled) if args.auto else
                   _fit(report, config, out, progress))
    write_text(RunFolder(out).dataset_report, report.format_text() + "\n")
    if pseudo is not None:
        from engine.active.pseudo import PSEUDO_LABELS
        write_json(out / PSEUDO_LABELS, pseudo)
        summary["pseudo_labels"] = len(pseudo["samples"])
    print_trust_summary(out)
    print(json.dumps(summary))
    return EXIT_OK if summary["status"] != "cancelled" else EXIT_FAILURE


def _pseudo_labels(report, config: TrainConfig, args, progress):
    """`train --unlabelled POOL`: the pool's confident samples join the training split when a threshold beats
    the labels alone on validation (engine.active.pseudo); (report, config, what pseudo_labels.json keeps)."""
    from dataclasses import replace

    from engine.active.pseudo import pseudo_label_record, with_pseudo_labels
    if config.weights != "pretrained":
        raise BadInput("--unlabelled chooses pseudo-labels with the pretrained model: leave out --from-scratch/--weights")
    labelled, choice, pool = with_pseudo_labels(report, args.unlabelled, config.backbone, seed=config.seed,
                                                text_column=args.text_column, progress=progress)
    print(f"[pseudo-labels] pool: {pool.summary()}", file=sys.stderr)
    if choice.threshold is None:
        print(f"[pseudo-labels] off: {choice.reason}", file=sys.stderr)
    else:
        print(f"[pseudo-labels] {len(choice.labels)} samples at probability {choice.threshold:g} or more join the "
              f"training split: {choice.reason}", file=sys.stderr)
        if config.balance == "none":       # as the threshold was chosen: every class weighs the same
            config = replace(config, balance="loss")
            print("[pseudo-labels] --balance loss: the confident samples crowd into the easy classes", file=sys.stderr)
    return labelled, config, pseudo_label_record(report, choice, pool)


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
        report = scan_data(data, config, progress)
        print_problem_summary(report)
        summary = _fit(report, config, run, progress, resume=True)
    write_text(RunFolder(run).dataset_report, report.format_text() + "\n")
    print(json.dumps(summary))
    return EXIT_OK if summary["status"] != "cancelled" else EXIT_FAILURE


def _refuse_options_with_resume(args) -> None:
    """A resumed run keeps its own settings: options that would change them are a mistake, said so."""
    defaults = build_parser().parse_args(["train", "--resume", "RUN"])
    given = [f"--{name.replace('_', '-')}" for name in (*(n for n, _ in TRAIN_OPTIONS), "model", "weights",
                                                         "from_scratch", "freeze", "out", "auto", "budget",
                                                         "config", "unlabelled")
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
    from engine.training.trainer import Trainer
    return fit_summary(Trainer(report, config, out, [progress], resume=resume).fit(), out)


def _search(report, config: TrainConfig, out: Path, budget: float, progress: TerminalProgress,
            unlabelled: list[str] | None = None) -> dict:
    from engine.core import modality as modalities
    modality = modalities.of(report)
    search = modality.recipe_search()
    if search is None:
        raise BadInput(f"--auto has no recipe search for {modality.nouns} yet: train without --auto")
    result = search(report, out, budget, config, [progress], unlabelled=unlabelled).run()
    for line in [f"decision: {result.decision}", *(f"note: {note}" for note in [*result.warnings, *result.notes])]:
        print(f"[search] {line}", file=sys.stderr)
    metrics = result.metrics
    return {"status": result.status, "run_dir": str(out), "checkpoint": str(RunFolder(out).checkpoint),
            "val_accuracy": metrics.get("val_accuracy"), "test_accuracy": metrics.get("test_accuracy"),
            "winner": result.winner, "seconds": round(result.seconds, 1)}


def cmd_assess(args) -> int:
    from engine.data.scan import scan_dataset
    from engine.search.assess import assess_backbones, format_table, summary
    backbones = [name.strip() for name in args.models.split(",")] if args.models else None
    device = check_device(args.device)
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
    p.add_argument("--deep", action="store_true",
                   help="also look for likely label errors, near-duplicates (within and across splits) and odd "
                        "samples: one pass of a pretrained model, then seconds; with --json one object of "
                        "label_issues, near_duplicates and odd_samples")
    p.add_argument("--model", default=None,
                   help="with --deep: the pretrained model whose features judge the samples (default: "
                        "efficientnet_lite0 for images, all-minilm-l6-v2 for texts)")
    add_device_option(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--unlabelled", nargs="+", metavar="POOL", default=None,
                   help="also report the unlabelled samples beside the dataset (folders, images; .txt or .csv of "
                        "texts): how many, which cannot be read, which are odd, which are labelled already")
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
    p.add_argument("--unlabelled", nargs="+", metavar="POOL", default=None,
                   help="unlabelled images (folders, files) or texts (.txt, one per line; .csv): the model's confident "
                        "predictions of them join the training split when that beats the labels alone on validation "
                        "(pseudo-labels; written to RUN/pseudo_labels.json)")
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
        if isinstance(exc, bad_input_types()):
            print(f"error: {first_line(exc)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        logging.getLogger("transferlab").exception("command %s failed", args.command)
        print(f"failed: {readable_error(exc)}", file=sys.stderr)
        return EXIT_FAILURE
