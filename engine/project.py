"""Project files (`*.tlproj`, JSON): everything needed to pick the work up again.

Dataset locations, label corrections (never applied to the user's files: the project records them and
`apply_corrections` uses them when the dataset is read), backbone, freeze state, hyper-parameters, the
training mode (manual, or an automatic search and its minutes) and the runs with their metrics. Saved
atomically; a corrupt or foreign file is refused, never rewritten.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from engine.core.files import write_json
from engine.data.report import DatasetReport, Problem, Sample

PROJECT_FORMAT = "transferlab-project/1"
PROJECT_SUFFIX = ".tlproj"
CORRECTION_ACTIONS = ("exclude", "relabel", "keep", "move")
"""keep: the deep check asked and the user said it is right; move: to another split ("split"), so that
near-duplicates sit in one split when TransferLab chose the split (engine.audit.deep.keep_groups_together)."""
TRAINING_MODES = ("manual", "automatic")      # one fit of the settings, or a recipe search within a time


class ProjectError(ValueError):
    """The file is not a TransferLab project (or is damaged); the message says which."""


@dataclass
class RunRecord:
    """One finished (or cancelled) training run, as listed in "Compare runs"."""

    run_dir: str
    created: str
    backbone: str
    status: str
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    config: dict = field(default_factory=dict)


def run_record_config(config: dict, search_minutes: float | None = None, winner: str | None = None,
                      fit_info: dict | None = None) -> dict:
    """What a run record keeps of a run's settings, for "Compare runs": its TrainConfig dict (an ensemble's
    first member's, with the members' count), an automatic search's minutes and winner, and how many
    parameters the fit had and trained (`fit_info`: a trainer's on_fit_start info, once its fit started)."""
    if "ensemble" in config:
        config = {**config["ensemble"][0], "ensemble_members": len(config["ensemble"])}
    record = dict(config)
    if search_minutes is not None:
        record["search_minutes"] = search_minutes
    if winner is not None:
        record["search_winner"] = winner
    if fit_info is not None:
        record.update(params_total=fit_info["params_total"], params_trainable=fit_info["params_trainable"])
    return record


@dataclass
class Project:
    dataset_sources: list[str] = field(default_factory=list)
    corrections: dict[str, dict] = field(default_factory=dict)   # path -> {"action", "label"}
    backbone: str = "efficientnet_lite0"
    frozen_parameters: list[str] | None = None
    config: dict = field(default_factory=dict)
    runs: list[RunRecord] = field(default_factory=list)
    training_mode: str = "manual"
    search_minutes: float = 10.0     # the automatic mode's time budget
    text_columns: dict | None = None  # a table of texts: {"text_column", "label_column"} as the user chose them
    unlabelled_sources: list[str] = field(default_factory=list)   # the unlabelled pool: folders, text files
    additions: dict[str, dict] = field(default_factory=dict)      # pool path -> {"label", "text"}: labelled here
    path: str | None = None          # where it was loaded from / saved to; not stored in the file

    # -- label corrections ------------------------------------------------------------------------
    def exclude(self, image_path: str) -> None:
        self.corrections[str(image_path)] = {"action": "exclude", "label": None}

    def relabel(self, image_path: str, label: str) -> None:
        self.corrections[str(image_path)] = {"action": "relabel", "label": str(label)}

    def keep(self, key: str) -> None:
        """The deep check need not ask about this sample (its path) or pair (engine.audit.deep.pair_key)
        again: the user looked and it is right."""
        self.corrections[str(key)] = {"action": "keep", "label": None}

    def kept(self) -> set[str]:
        return {key for key, item in self.corrections.items() if item["action"] == "keep"}

    def restore(self, image_path: str) -> None:
        self.corrections.pop(str(image_path), None)

    def add_run(self, record: RunRecord) -> None:
        self.runs = [r for r in self.runs if r.run_dir != record.run_dir] + [record]

    # -- files --------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("path")
        return {"format": PROJECT_FORMAT,
                "saved": datetime.now(timezone.utc).isoformat(timespec="seconds"), **data}

    def save(self, path: str | os.PathLike | None = None) -> str:
        target = Path(path or self.path or "")
        if not str(target) or target.is_dir():
            raise ProjectError("choose a file name for the project")
        if target.suffix != PROJECT_SUFFIX:
            target = target.with_name(target.name + PROJECT_SUFFIX)
        write_json(target, self.to_dict())
        self.path = str(target)
        return self.path

    def missing_sources(self) -> list[str]:
        """Dataset locations that no longer exist (moved or unplugged drive)."""
        return [s for s in self.dataset_sources if not os.path.exists(s)]

    def relocate(self, old: str, new: str) -> None:
        """The dataset moved from `old` to `new`: rewrite every stored path under it."""
        def moved(path: str) -> str:
            rel = os.path.relpath(path, old)
            return path if rel.startswith("..") else os.path.normpath(os.path.join(new, rel))
        self.dataset_sources = [moved(s) for s in self.dataset_sources]
        self.corrections = {"\n".join(moved(p) for p in key.split("\n")): c for key, c in self.corrections.items()}
        self.unlabelled_sources = [moved(s) for s in self.unlabelled_sources]
        self.additions = {moved(p): a for p, a in self.additions.items()}


def load_project(path: str | os.PathLike) -> Project:
    """Read and validate a project file; never modifies it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProjectError(f"project file not found: {path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ProjectError(f"{path.name} is not a TransferLab project (not JSON)") from None
    if not isinstance(data, dict) or data.get("format") != PROJECT_FORMAT:
        raise ProjectError(f"{path.name} is not a TransferLab project (format "
                           f"{data.get('format') if isinstance(data, dict) else type(data).__name__!r})")
    try:
        project = Project(
            dataset_sources=_str_list(data.get("dataset_sources", [])),
            corrections=_corrections(data.get("corrections", {})),
            backbone=str(data.get("backbone", "efficientnet_lite0")),
            frozen_parameters=None if data.get("frozen_parameters") is None
            else _str_list(data["frozen_parameters"]),
            config=dict(data.get("config") or {}),
            runs=[RunRecord(**r) for r in data.get("runs", [])],
            training_mode=_training_mode(data.get("training_mode", "manual")),
            search_minutes=_minutes(data.get("search_minutes", 10.0)),
            text_columns=_text_columns(data.get("text_columns")),
            unlabelled_sources=_str_list(data.get("unlabelled_sources", [])),
            additions=_additions(data.get("additions", {})),
            path=str(path))
    except (TypeError, ValueError) as exc:
        raise ProjectError(f"{path.name} is damaged: {exc}") from None
    return project


def _text_columns(value) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) and (v is None or isinstance(v, str))
                                              for k, v in value.items()):
        raise ValueError("text_columns must map column roles to names")
    return dict(value)


def _str_list(value) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of strings")
    return list(value)


def _training_mode(value) -> str:
    if value not in TRAINING_MODES:
        raise ValueError(f"training_mode must be one of {', '.join(TRAINING_MODES)}")
    return value


def _minutes(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError("search_minutes must be a positive number")
    return float(value)


def _corrections(value) -> dict[str, dict]:
    if not isinstance(value, dict):
        raise ValueError("corrections must be an object")
    for item in value.values():
        if not isinstance(item, dict) or item.get("action") not in CORRECTION_ACTIONS:
            raise ValueError(f"each correction needs an action: {', '.join(CORRECTION_ACTIONS)}")
        if item["action"] == "relabel" and not isinstance(item.get("label"), str):
            raise ValueError("a relabel correction needs a label")
        if item["action"] == "move" and item.get("split") not in ("train", "val", "test"):
            raise ValueError("a move correction needs a split: train, val or test")
    return dict(value)


def _additions(value) -> dict[str, dict]:
    if not isinstance(value, dict):
        raise ValueError("additions must be an object")
    for item in value.values():
        if not isinstance(item, dict) or not isinstance(item.get("label"), str):
            raise ValueError("each addition needs a label")
        if item.get("text") is not None and not isinstance(item["text"], str):
            raise ValueError("an addition's text must be a string")
    return dict(value)


def apply_additions(report: DatasetReport, additions: dict[str, dict]) -> DatasetReport:
    """The report with the samples labelled from the unlabelled pool (the labelling view's, `additions`:
    path -> {"label", "text"}) added to the training split, never to validation or test: they were chosen
    by the model, so scoring on them would flatter it. A label the set does not have is left out (the
    labelling view offers the set's classes only)."""
    known = {s.path for s in report.samples}
    added = [Sample(path, report.classes.index(item["label"]), "train", item.get("text"))
             for path, item in additions.items() if item["label"] in report.classes and path not in known]
    if not added:
        return report
    return replace(report, samples=[*report.samples, *added],
                   content_hash=f"{report.content_hash}+added-{_corrections_digest(additions)}")


def apply_corrections(report: DatasetReport, corrections: dict[str, dict]) -> DatasetReport:
    """The report as training should see it: excluded images (or texts, by their row) dropped (listed as
    info problems), relabelled ones moved to their new class (a new class name is added), moved ones in
    their new split; kept ones as they are."""
    if not corrections:
        return report
    classes = list(report.classes)
    for item in corrections.values():
        if item["action"] == "relabel" and item["label"] not in classes:
            classes.append(item["label"])
    classes.sort()
    samples, problems = [], list(report.problems)
    for sample in report.samples:
        fix = corrections.get(sample.path)
        fix = fix if fix and fix["action"] != "keep" else None          # kept: read as it is
        if fix and fix["action"] == "move":
            sample, fix = replace(sample, split=fix["split"]), None
        name = report.classes[sample.label]
        if fix and fix["action"] == "exclude":
            problems.append(Problem(sample.path, "excluded by you", "info"))
            continue
        if fix and fix["action"] == "relabel":
            name = fix["label"]
        samples.append(replace(sample, label=classes.index(name)))      # a text keeps its text
    used = sorted({s.label for s in samples})
    classes = [classes[i] for i in used]
    remap = {old: new for new, old in enumerate(used)}
    samples = [replace(s, label=remap[s.label]) for s in samples]
    changes = {key: item for key, item in corrections.items() if item["action"] != "keep"}
    if not changes:                      # kept samples read as they are: the cached features still hold
        return report
    return replace(report, classes=classes, samples=samples, problems=problems,
                   content_hash=f"{report.content_hash}+{_corrections_digest(changes)}")


def _corrections_digest(corrections: dict) -> str:
    import hashlib
    return hashlib.sha256(json.dumps(corrections, sort_keys=True).encode()).hexdigest()[:16]
