"""A third modality written from the tests folder alone: rows of numbers (`label,x1,...,xd` lines in a
`.rows` file) classified by a small MLP that plays the pretrained backbone. It implements what
docs/ARCHITECTURE.md "A new modality" lists, and registers with `engine.core.modality.register`; no
engine file knows it exists.
"""
from __future__ import annotations

import os
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset

from engine.core.modality import Modality
from engine.data.pipeline import Candidate, Reading, SampleReader, SplitSettings, scan_samples
from engine.data.preprocessing import Preprocessing
from engine.data.report import Problem
from engine.data.split import CARVE_ALL
from engine.models.catalog import BackboneSpec, ModelBundle
from engine.models.checkpoint import load_checkpoint
from engine.models.heads import head_kind, set_head
from engine.models.predictor import trusted
from engine.outputs.export import ExportError, ExportSteps, export_checked, provenance, trust_card, validation_rows
from engine.outputs.predict import (ONNX_FORMAT, SampleError, onnx_outputs, open_onnx, refuse_other_modality,
                                    resolve_checkpoint, torch_outputs)
from engine.training.inputs import TrainingInputs

NAME = "rows"
BACKBONE = "rows-mlp"
WIDTH = 4


# -- the data: one sample per line -------------------------------------------------------------------
@lru_cache(maxsize=8)
def _lines(path: str, mtime: float) -> tuple[tuple[str, tuple[float, ...]] | None, ...]:
    parsed = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        label, *values = line.split(",")
        try:
            parsed.append((label.strip(), tuple(float(v) for v in values)))
        except ValueError:
            parsed.append(None)
    return tuple(parsed)


def read_row(where: str) -> np.ndarray:
    """The numbers of the sample `where` ('FILE:row N') names."""
    path, row = where.rsplit(":row ", 1)
    entry = _lines(path, os.path.getmtime(path))[int(row) - 1]
    if entry is None or len(entry[1]) != WIDTH:
        raise SampleError(f"row {row} is not {WIDTH} numbers")
    return np.asarray(entry[1], np.float32)


class RowsReader(SampleReader):
    modality = NAME
    noun = "row"
    hash_version = "rows-v1"

    def read(self, source, progress, control) -> Reading:
        path = os.path.abspath(source)
        lines = _lines(path, os.path.getmtime(path))
        candidates, problems = [], []
        for number, entry in enumerate(lines, start=1):
            control.checkpoint()
            where = f"{path}:row {number}"
            if entry is None or len(entry[1]) != WIDTH:
                problems.append(Problem(where, f"not a label and {WIDTH} numbers", "error"))
                continue
            content = ",".join(f"{v:.6g}" for v in entry[1])
            candidates.append(Candidate(where, entry[0], CARVE_ALL, content=content, sort_key=(number,),
                                        position=(number,), hash_fields=(content,)))
            progress("scan", number, len(lines))
        locations = {c.label: [path] for c in candidates}
        return Reading(path, candidates, problems, "rows", "file", class_locations=locations)


class RowDataset(Dataset):
    def __init__(self, samples):
        self.rows = [torch.from_numpy(read_row(s.path)) for s in samples]
        self.labels = [s.label for s in samples]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int):
        return self.rows[index], self.labels[index]


# -- the "pretrained" model: timm's interface, so the layer tree, presets and heads apply -------------
class RowsNet(nn.Module):
    def __init__(self, num_classes: int, hidden: int = 32, depth: int = 3):
        super().__init__()
        self.num_features = hidden
        self.drop_rate = 0.0
        self.stem = nn.Sequential(nn.Linear(WIDTH, hidden), nn.ReLU())
        self.blocks = nn.Sequential(*[nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU()) for _ in range(depth)])
        self.classifier = nn.Linear(hidden, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return features if pre_logits else self.classifier(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier = nn.Linear(self.num_features, num_classes)

    def group_matcher(self, coarse: bool = True) -> dict:
        return {"stem": r"^stem", "blocks": r"^blocks\.(\d+)"}


class RowsInputs(TrainingInputs):
    """Every stage trains on the rows themselves (they are tiny: nothing to cache)."""

    def __init__(self, modality: "RowsModality"):
        super().__init__()
        self.modality = modality

    def create_bundle(self, config, num_classes: int) -> ModelBundle:
        return self.modality.bundle(num_classes, config.head)

    def pipeline(self):
        trainer = self.trainer
        return (trainer.model, self._loader(trainer.train_samples, shuffle=True),
                self._loader(trainer.val_samples, shuffle=False), "rows")

    def eval_inputs(self, samples):
        return self.evaluated(self.trainer.model), self._loader(samples, shuffle=False)

    def _loader(self, samples, shuffle: bool) -> DataLoader:
        return DataLoader(RowDataset(samples), batch_size=self.trainer.config.batch_size, shuffle=shuffle,
                          generator=self.trainer.generator if shuffle else None)

    def cache_fingerprint(self, path: str) -> None:
        return None

    def frozen_pass(self, path: str) -> str:
        return "none"

    def release(self) -> None:
        pass


# -- the outputs ------------------------------------------------------------------------------------
class TorchRowsClassifier:
    kind, modality = "torch", NAME

    def __init__(self, path, device: str = "cpu"):
        self.path = str(path)
        model, checkpoint = load_checkpoint(path)
        refuse_other_modality(self.path, checkpoint.meta, self.modality)
        self.model = trusted(model, checkpoint)          # calibrated logits and the unknown score, as images
        self.meta, self.classes = checkpoint.meta, checkpoint.classes

    def logits(self, rows) -> np.ndarray:
        return self.scored(rows)[0]

    def scored(self, rows):
        return torch_outputs(self.model, torch.from_numpy(np.stack(rows)), torch.device("cpu"))


class OnnxRowsClassifier:
    kind, modality = "onnx", NAME

    def __init__(self, path):
        self.path = str(path)
        self.session, self.meta = open_onnx(self.path)
        refuse_other_modality(self.path, self.meta, self.modality)
        self.classes = list(self.meta["classes"])

    def logits(self, rows) -> np.ndarray:
        return self.scored(rows)[0]

    def scored(self, rows):
        return onnx_outputs(self.session.run(None, {"rows": np.stack(rows).astype(np.float32)}))


class RowsModality(Modality):
    name = NAME
    noun = "row"
    nouns = "rows"

    def __init__(self, weights_folder: Path):
        self.weights = Path(weights_folder) / "rows-mlp.safetensors"
        if not self.weights.exists():                    # "pretraining": a fixed random projection
            torch.manual_seed(1234)
            self.weights.parent.mkdir(parents=True, exist_ok=True)
            net = RowsNet(1)
            save_file({k: v for k, v in net.state_dict().items() if not k.startswith("classifier")},
                      str(self.weights))

    # data
    def reads(self, source) -> bool:
        return str(source).endswith(".rows") and os.path.isfile(source)

    def scan(self, source, *, seed: int = 0, backbone=None, progress=None, control=None, **options):
        return scan_samples(RowsReader(), source, SplitSettings(seed=seed), progress=progress, control=control)

    # models
    def owns_backbone(self, name) -> bool:
        return name == BACKBONE

    def backbone_rows(self) -> list[dict]:
        return [{"name": BACKBONE, "title": "Rows MLP (tests)", "modality": NAME, "available": True}]

    @property
    def default_backbone(self) -> str:
        return BACKBONE

    def bundle(self, num_classes: int, head: str = "linear") -> ModelBundle:
        net = RowsNet(num_classes)
        net.load_state_dict(load_file(str(self.weights)), strict=False)
        set_head(net, head)
        return ModelBundle(net, BackboneSpec(BACKBONE, "rows-mlp", "Rows MLP"), Preprocessing(WIDTH),
                           "pretrained (tests)", modality=NAME)

    def checkpoint_meta(self, bundle, model) -> dict:
        return {"backbone": BACKBONE, "arch": "rows-mlp", "head": head_kind(model),
                "preprocessing": {"width": WIDTH}}

    def build_from_meta(self, meta: dict, head: str):
        net = RowsNet(len(meta["classes"]))
        set_head(net, head)
        return net

    # training
    def training_inputs(self):
        return RowsInputs(self)

    def eval_inputs(self, model, checkpoint, samples, batch_size: int):
        return model, DataLoader(RowDataset(samples), batch_size=batch_size)

    # outputs
    def export(self, run_dir, out, *, verify=None, tolerance: float = 1e-4, progress=None, control=None, **options):
        started, step, notes = time.monotonic(), ExportSteps(progress, control), []
        step("load model")
        checkpoint_path, run_folder = resolve_checkpoint(run_dir)
        bare, checkpoint = load_checkpoint(checkpoint_path)
        model = trusted(bare, checkpoint)
        rows = [read_row(row["path"]) for row in validation_rows(run_folder, lambda row: ":row " in row["path"])]
        if not rows:
            raise ExportError("no rows to verify the export on")
        card = {"format": ONNX_FORMAT, "modality": NAME, "classes": checkpoint.classes, "backbone": BACKBONE,
                "input": {"name": "rows", "shape": ["batch", WIDTH], "dtype": "float32"},
                "output": {"name": "logits", "shape": ["batch", len(checkpoint.classes)]},
                "preprocessing": {"width": WIDTH}, **provenance(checkpoint.meta, run_folder),
                **trust_card(checkpoint.meta)}
        return export_checked(model.eval(), card, Path(out), rows, exporters=("legacy", "dynamo"),
                              tolerance=tolerance, step=step, notes=notes, started=started,
                              torch_inputs=lambda batch: torch.from_numpy(np.stack(list(batch))),
                              open_exported=OnnxRowsClassifier)

    def classifier(self, path, kind: str, device: str = "cpu"):
        return OnnxRowsClassifier(path) if kind == "onnx" else TorchRowsClassifier(path, device)

    def prediction_items(self, arguments, **options):
        return [(where, where) for where in arguments], []

    def prediction_input(self, payload):
        return read_row(payload)


def write_rows(path: Path, per_class: int = 40, seed: int = 0) -> Path:
    """Three well-separated clusters in 4-D, and one malformed line the scan must report."""
    rng = np.random.default_rng(seed)
    centres = {"north": (3, 0, 0, 0), "east": (0, 3, 0, 0), "south": (0, 0, 3, 0)}
    lines = [f"{label}," + ",".join(f"{v:.4f}" for v in rng.normal(centre, 0.6))
             for _ in range(per_class) for label, centre in centres.items()]
    lines.insert(5, "north,1,2")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
