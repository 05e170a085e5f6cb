"""What the command line's commands share, one-process `train` and a torchrun process alike: exit statuses,
bad input, the config from flags or a file, the device check, the data's report, the summary lines."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from engine.core.errors import first_line
from engine.core.runfolder import DATASET_REPORT, RunFolder
from engine.models.presets import parse_freeze
from engine.training.config import TrainConfig

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


class BadInput(Exception):
    """Raised by commands for a user mistake: reported as one line, exit status 2."""


def bad_input_types() -> tuple[type[BaseException], ...]:
    """Errors that mean "the input is wrong": every input error of the engine is a ValueError (DatasetError,
    ModelError, CheckpointError, WeightsError, ExportError, ModelFileError, bad settings), plus unreadable
    images and missing files."""
    from engine.data.images import ImageError     # Pillow only: `--help` stays instant
    return BadInput, ValueError, FileNotFoundError, ImageError


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


def config_from_args(args) -> TrainConfig:
    preset, blocks = parse_freeze(args.freeze)
    values = {name: getattr(args, name) for name, _ in TRAIN_OPTIONS}
    config = TrainConfig(**values, backbone=args.model, freeze=preset, freeze_blocks=blocks or 2,
                         weights="random" if args.from_scratch else args.weights)
    if args.recipe == "two-stage":
        config.head_epochs = min(max(1, args.epochs // 3), args.epochs - 1) if args.epochs > 1 else 1
    config.validate()
    return config


def read_config_file(path: str) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInput(f"cannot read the config {path}: {first_line(exc)}") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path} is not a training config (a JSON object)")
    return data


def config_from_file(path: str, data: dict | None = None) -> TrainConfig:
    """A run's config.json (e.g. the winner of `--auto`): every training choice, the flags' ignored.
    `data`: the file's contents when already read."""
    data = read_config_file(path) if data is None else data
    if "ensemble" in data:
        raise BadInput(f"{path} is an ensemble's config: train it with `train DATA --out RUN --config` "
                       "in one process (each member in turn)")
    config = TrainConfig.from_dict(data)
    config.validate()
    return config


def check_device(name: str):
    """The torch device `name` means here; DeviceUnavailable (bad input: one line, exit 2) before any work
    when it is not on this machine."""
    from engine.core.device import resolve_device
    return resolve_device(name)


def config_for_data(config: TrainConfig, args) -> TrainConfig:
    """The model matches the data's modality: with the default backbone, a dataset of another modality
    trains that modality's default model; a model of another modality asked for by name is a mistake said
    in one line."""
    from engine.core import modality as modalities
    from engine.models.catalog import DEFAULT_BACKBONE
    data = modalities.for_source(args.data)
    model = modalities.for_backbone(config.backbone)
    if data is model:
        return config
    if config.backbone == DEFAULT_BACKBONE and data.default_backbone:
        config.backbone = data.default_backbone
        return config
    names = ", ".join(row["name"] for row in data.backbone_rows())
    folders = " or a Hugging Face model folder" if data.takes_model_folders else ""
    raise BadInput(f"{args.data} holds {data.nouns}: --model must be {data.model_noun_article} ({names}){folders}, "
                   f"not the {model.model_noun} {config.backbone}")


def scan_data(data, config: TrainConfig, progress, args=None):
    """The dataset report of images or texts (engine.training.datasets), with the text column options."""
    from engine.training.datasets import scan_any
    columns = {name: getattr(args, name, None) for name in ("text_column", "label_column", "split_column")}
    return scan_any(data, seed=config.seed, encoder=config.backbone, max_tokens=config.max_tokens, progress=progress,
                **columns)


def fit_summary(result, out: Path) -> dict:
    """The one JSON line `train` prints at the end."""
    metrics = result.metrics
    return {"status": result.status, "run_dir": str(out), "checkpoint": result.checkpoint,
            "val_accuracy": metrics.get("val_accuracy"), "test_accuracy": metrics.get("test_accuracy")}


def print_trust_summary(run_dir: Path) -> None:
    """One line on stderr: how the run was calibrated and what its unknown threshold accepts."""
    try:
        metrics = json.loads(RunFolder(run_dir).metrics.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    calibration, unknown = metrics.get("calibration") or {}, metrics.get("unknown") or {}
    if not calibration or not unknown:
        return
    split = "test" if calibration.get("test_ece_after") is not None else "val"
    accepted = unknown.get(f"{split}_accepted")
    print(f"calibrated: temperature {calibration['temperature']:.2f}, {split} ECE "
          f"{100 * calibration[f'{split}_ece_before']:.1f} % -> {100 * calibration[f'{split}_ece_after']:.1f} %; "
          f"unknown above {unknown['threshold']:.3g} (accepts {100 * unknown['accept']:.1f} % of val"
          + (f", {100 * accepted:.1f} % of {split})" if accepted is not None and split == "test" else ")"),
          file=sys.stderr)


def print_problem_summary(report) -> None:
    """One line on stderr when the scan found problems; the details go to the run folder."""
    if report.problems:
        print(f"{len(report.problems)} dataset problem(s); see {DATASET_REPORT} in the run folder",
              file=sys.stderr)
