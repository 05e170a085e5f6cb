"""Every training choice in one dataclass: the trainer, the CLI's options, the window's settings form and
project files all derive from it, so a setting is defined once. No torch here, so `--help` is instant."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from engine.core import modality as modalities
from engine.core.devicenames import DEVICE_NAMES
from engine.data.preprocessing import AUGMENTATIONS
from engine.models.catalog import DEFAULT_BACKBONE
from engine.models.presets import FREEZE_PRESETS, HEADS, TEST_TIME_AUGMENTATIONS

OPTIMIZERS = ("adamw", "sgd", "lbfgs")
"""'lbfgs': the head solved exactly on cached features (engine.training.logistic); head only, linear head."""
SCHEDULES = ("cosine", "onecycle", "constant")
BALANCING = ("none", "loss", "sampler")
RECIPES = ("single", "two-stage")
CACHE_MODES = ("auto", "off")
CHECKPOINTS = ("best", "last")
FROZEN_RUNTIMES = ("auto", "pytorch")
CHOICES = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "balance": BALANCING, "recipe": RECIPES,
           "augmentation": AUGMENTATIONS, "freeze": FREEZE_PRESETS, "cache": CACHE_MODES, "head": HEADS,
           "tta": TEST_TIME_AUGMENTATIONS, "frozen_runtime": FROZEN_RUNTIMES,
           "checkpoint": CHECKPOINTS}
"""The fields with a fixed set of values: validated here, offered as choices by the CLI and the window."""


@dataclass
class TrainConfig:
    """Every training choice, with defaults chosen from measurements (see README, "Defaults")."""

    backbone: str = DEFAULT_BACKBONE
    weights: str = "pretrained"          # 'pretrained' | 'random' | path to a weights file
    epochs: int = 10
    batch_size: int = 32
    image_size: int | None = None        # None: the backbone's pretrained size
    lr: float = 3e-3                     # for the head; deeper groups get lr * layer_decay**depth
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    layer_decay: float = 0.6
    label_smoothing: float = 0.1
    balance: str = "none"
    early_stopping: int = 0              # patience in epochs; 0 turns it off
    checkpoint: str = "last"             # 'last' epoch (validation stays an honest score), or 'best' on validation
    grad_clip: float = 1.0               # max gradient norm; 0 turns it off
    seed: int = 0
    augmentation: str = "light"
    freeze: str = "head"                 # 'head' | 'last-n' | 'none'
    freeze_blocks: int = 2               # blocks that train with freeze='last-n'
    frozen_parameters: list[str] | None = None   # explicit freeze state (GUI tree); overrides `freeze`
    recipe: str = "single"               # 'two-stage': head first, then unfreeze at a lower rate
    head_epochs: int = 3
    stage2_lr_factor: float = 0.1
    train_frozen_bn: bool = False        # let frozen BatchNorm layers update running statistics
    cache: str = "auto"                  # 'auto': reuse frozen-backbone features when possible
    cached_views: int = 1                # feature-cache views per image: 1 = un-augmented only (measured best)
    head: str = "linear"                 # 'mlp': a hidden layer between pooled features and the classes
    tta: str = "none"                    # 'flip': average the logits of each image and its mirror image
    frozen_runtime: str = "auto"         # 'auto': the frozen pass runs in ONNX Runtime on a CPU when it pays
    num_workers: int = 0
    device: str = "auto"                 # auto | cpu | cuda | cuda:N | mps; 'auto': CUDA, then MPS, then CPU
    max_tokens: int | None = None        # texts: tokens kept per text (None: the encoder's own, 256 for MiniLM)

    @property
    def modality(self) -> str:
        """The engine.core.modality name of what the backbone classifies (a text encoder: texts)."""
        return modalities.for_backbone(self.backbone).name

    def validate(self) -> None:
        modalities.for_backbone(self.backbone).check_backbone(self.backbone)   # before any work starts
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}")
        if not isinstance(self.device, str) or not DEVICE_NAMES.match(self.device):
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, not {self.device!r}")
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                    "cached_views": self.cached_views}
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, not {value}")
        if self.image_size is not None and not 32 <= self.image_size <= 1024:
            raise ValueError(f"image_size must be between 32 and 1024, not {self.image_size}")
        if self.max_tokens is not None and not 8 <= self.max_tokens <= 8192:
            raise ValueError(f"max_tokens must be between 8 and 8192, not {self.max_tokens}")
        if self.recipe == "two-stage" and not 0 < self.head_epochs < self.epochs:
            raise ValueError("two-stage needs 0 < head_epochs < epochs")
        head_alone = self.frozen_parameters is not None or self.freeze == "head"
        if self.optimizer == "lbfgs" and not (head_alone and self.recipe == "single" and self.head == "linear"):
            raise ValueError("optimizer lbfgs solves a linear head on its own (freeze head, single recipe, linear "
                             "head): choose adamw or sgd to train deeper layers or an MLP head")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
