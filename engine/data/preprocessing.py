"""How an image becomes a backbone's input, as plain data: it travels with checkpoints and ONNX files and
is read by the transforms, the image cache and the exporter. No torch here."""
from __future__ import annotations

from dataclasses import asdict, dataclass

AUGMENTATIONS = ("none", "flip", "light", "strong")


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the tensor a backbone expects; travels with checkpoints and ONNX files."""

    input_size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"
    crop_pct: float = 0.875

    @property
    def resize_size(self) -> int:
        """Shorter side after resizing, before the centre crop."""
        return int(round(self.input_size / self.crop_pct))

    def with_size(self, input_size: int | None) -> "Preprocessing":
        if not input_size or input_size == self.input_size:
            return self
        return Preprocessing(input_size, self.mean, self.std, self.interpolation, self.crop_pct)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        return cls(int(d["input_size"]), tuple(d["mean"]), tuple(d["std"]), str(d["interpolation"]),
                   float(d["crop_pct"]))
