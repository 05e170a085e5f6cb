"""The deep check of a dataset (`main.py inspect DATA --deep`, the Data step's "Check deeper"): one frozen
pass of a pretrained model over every sample (through the caches the recipe search and a head-only fit
share), then seconds of arithmetic on its features:

- likely label errors: confident learning on out-of-fold probabilities (engine.audit.labels);
- near-duplicates within and across splits (engine.audit.duplicates), confirmed by the samples themselves;
- odd samples: what the modality finds odd in a sample on its own (images: blank, dark, bright, blurred,
  tiny, stretched; texts: empty, very short, mostly not words) and samples far from all others
  (engine.audit.odd).

Samples the user already kept ("this one is right", the project's corrections) are not asked about again.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Collection

import numpy as np
import torch

from engine.audit.duplicates import NEIGHBOURS, candidate_pairs, groups_of, nearest, unit_rows
from engine.audit.labels import VOTERS, label_issue_mask, label_probabilities, self_confidence
from engine.audit.odd import far_from_all
from engine.core import modality as modalities
from engine.core.control import RunControl
from engine.core.progress import Progress, no_progress
from engine.data.report import DatasetReport, Sample

OUTLIER_REASON = "far from every other sample (something else, or another kind of picture or text?)"


@dataclass
class LabelIssue:
    path: str
    given: str
    suggested: str
    score: float          # how sure the model is that the given label is wrong: 1 - its probability
    split: str


@dataclass
class NearDuplicate:
    a: str
    b: str
    similarity: float     # the modality's confirmation: 1 for identical content
    splits: tuple[str, str]

    @property
    def across_splits(self) -> bool:
        return self.splits[0] != self.splits[1]

    @property
    def key(self) -> str:
        """How a user's "keep both" of this pair is remembered (the project's corrections)."""
        return pair_key(self.a, self.b)


@dataclass
class OddSample:
    path: str
    reason: str
    split: str


@dataclass
class DeepReport:
    label_issues: list[LabelIssue]
    near_duplicates: list[NearDuplicate]
    odd_samples: list[OddSample]
    backbone: str
    samples: int
    seconds: float
    method: dict = field(default_factory=dict)     # how each list was made, for the record
    groups: list[list[str]] = field(default_factory=list)   # near-duplicate groups of 2 or more

    def to_dict(self, root: str | None = None) -> dict:
        """JSON-ready: every path relative to `root` (the dataset the user gave) where it lies under it."""
        def rel(path: str) -> str:
            return relative_path(path, root)
        return {
            "label_issues": [{**asdict(i), "path": rel(i.path)} for i in self.label_issues],
            "near_duplicates": [{**asdict(d), "a": rel(d.a), "b": rel(d.b), "splits": list(d.splits)}
                                for d in self.near_duplicates],
            "odd_samples": [{**asdict(o), "path": rel(o.path)} for o in self.odd_samples],
            "backbone": self.backbone, "samples": self.samples, "seconds": round(self.seconds, 1),
            "method": self.method,
        }

    def summary(self, noun: str = "samples") -> str:
        across = sum(d.across_splits for d in self.near_duplicates)
        return (f"{len(self.label_issues)} likely label errors, {len(self.near_duplicates)} near-duplicate pairs "
                f"({across} across splits), {len(self.odd_samples)} odd {noun} "
                f"({self.samples:,} {noun} through {self.backbone}, {self.seconds:.0f} s)")


    def format_text(self, root: str | None = None, shown: int = 20) -> str:
        """The three lists as `main.py inspect --deep` prints them, `shown` lines of each at most."""
        def rel(path: str) -> str:
            return relative_path(path, root)
        lines = [f"Deep check: {self.summary()}", ""]
        lines.append(f"Likely label errors ({len(self.label_issues)}; {self.method.get('label_issues', {}).get('probabilities', '')}):")
        lines += [f"  {i.score:5.0%}  {rel(i.path)}  labelled {i.given!r}, looks like {i.suggested!r} ({i.split})"
                  for i in self.label_issues[:shown]]
        lines.append(f"Near-duplicates ({len(self.near_duplicates)}, "
                     f"{sum(d.across_splits for d in self.near_duplicates)} across splits):")
        lines += [f"  {d.similarity:.3f}  {rel(d.a)} ({d.splits[0]})  ~  {rel(d.b)} ({d.splits[1]})"
                  + ("  LEAK" if d.across_splits else "") for d in self.near_duplicates[:shown]]
        lines.append(f"Odd samples ({len(self.odd_samples)}):")
        lines += [f"  {rel(o.path)} ({o.split}): {o.reason}" for o in self.odd_samples[:shown]]
        hidden = [len(x) - shown for x in (self.label_issues, self.near_duplicates, self.odd_samples) if len(x) > shown]
        if hidden:
            lines.append(f"(the first {shown} of each list; --json lists all)")
        return "\n".join(lines)


def keep_groups_together(report: DatasetReport, deep: DeepReport) -> dict[str, dict]:
    """Corrections ("move") that put each group of near-duplicates in one split, when TransferLab chose the
    split (a split the user gave is the user's): a group goes where most of it is, train on a tie, so the
    validation and test figures count no sample whose twin trained. {} when nothing straddles."""
    if report.split_given:
        return {}
    split_of = {s.path: s.split for s in report.samples}
    moves = {}
    for group in deep.groups:
        splits = [split_of[path] for path in group if path in split_of]
        if len(set(splits)) < 2:
            continue
        target = max(("train", "val", "test"), key=lambda split: (splits.count(split), split == "train"))
        moves.update({path: {"action": "move", "label": None, "split": target}
                      for path in group if split_of.get(path) not in (None, target)})
    return moves


def pair_key(a: str, b: str) -> str:
    return "\n".join(sorted((a, b)))


def relative_path(path: str, root: str | None) -> str:
    """`path` relative to `root` when it lies under it (a text's 'file.csv:row 3' is kept as it is)."""
    if not root or not os.path.isabs(path):
        return path
    base = root if os.path.isdir(root) else os.path.dirname(root)
    relative = os.path.relpath(path, base)
    return path if relative.startswith("..") else relative


def inspect_deep(report: DatasetReport, backbone: str | None = None, seed: int = 0,
                 control: RunControl | None = None, progress: Progress | None = None,
                 kept: Collection[str] = (), device: torch.device | None = None) -> DeepReport:
    """Every check on `report`'s samples through `backbone` (the modality's default when None), its one
    frozen pass on `device` (None: the CPU)."""
    started = time.monotonic()
    control = control or RunControl()
    progress = progress or no_progress
    modality = modalities.of(report)
    backbone = backbone or modality.default_backbone
    samples = list(report.samples)
    if len(samples) < 2:
        raise ValueError(f"a deep check needs at least two {modality.nouns}")
    features = modality.frozen_features(report, samples, backbone, seed=seed, control=control, progress=progress,
                                        device=device)
    usable = torch.isfinite(features).all(1).numpy()
    signatures = modality.audit_signatures(samples, control=control, progress=progress)
    unit = unit_rows(features)
    similarity, neighbours = nearest(unit, max(NEIGHBOURS, VOTERS))
    issues, label_method = _label_issues(report, samples, features, neighbours, usable, seed, control, progress)
    progress("checks", 0, 2)
    duplicates, groups, copy_method = _near_duplicates(modality, samples, signatures, unit, neighbours, usable, kept)
    progress("checks", 1, 2)
    odd = _odd_samples(modality, samples, signatures, similarity, usable, kept)
    progress("checks", 2, 2)
    return DeepReport([i for i in issues if i.path not in kept], duplicates, odd, backbone, len(samples),
                      time.monotonic() - started, {"label_issues": label_method, "near_duplicates": copy_method},
                      groups)


def _label_issues(report: DatasetReport, samples: list[Sample], features: torch.Tensor, neighbours: np.ndarray,
                  usable: np.ndarray, seed: int, control: RunControl, progress: Progress) -> tuple[list[LabelIssue], dict]:
    labels = np.array([s.label for s in samples])
    rows = np.flatnonzero(usable)
    present = np.bincount(labels[rows], minlength=len(report.classes))
    if (present >= 2).sum() < 2:
        return [], {"skipped": "fewer than two classes with two samples"}
    rows = rows[present[labels[rows]] >= 2]                # a class of one sample cannot be held out
    probabilities, fitted = label_probabilities(features, neighbours, labels, rows, len(report.classes), seed,
                                                control, progress)
    given = labels[rows]
    flagged = np.flatnonzero(label_issue_mask(given, probabilities))
    confidence = self_confidence(given, probabilities)
    flagged = flagged[np.argsort(confidence[flagged], kind="stable")]
    issues = [LabelIssue(samples[rows[i]].path, report.classes[given[i]],
                         report.classes[int(probabilities[i].argmax())], round(1.0 - float(confidence[i]), 4),
                         samples[rows[i]].split) for i in flagged]
    method = {"probabilities": f"{fitted.folds}-fold out-of-fold logistic regression (L2 {fitted.penalty:g}) "
                               f"averaged with the votes of the {VOTERS} nearest neighbours",
              "filter": "confident learning (off-diagonal of the confident joint)",
              "ranked_by": "self-confidence", "log_loss": round(fitted.log_loss, 4)}
    return issues, method


def _near_duplicates(modality, samples: list[Sample], signatures, unit: torch.Tensor, neighbours: np.ndarray,
                     usable: np.ndarray, kept: Collection[str]) -> tuple[list[NearDuplicate], list[list[str]], dict]:
    pairs = candidate_pairs(neighbours[:, :NEIGHBOURS], usable)
    scores = modality.copy_similarity(samples, signatures, pairs)
    method = {"candidates": f"{NEIGHBOURS} nearest by the frozen features", "confirmed_by": modality.copy_measure,
              "limit": modality.copy_limit}
    if scores is None:               # no confirmation of its own: the features' cosine
        scores = (unit[pairs[:, 0]] * unit[pairs[:, 1]]).sum(1).numpy() if len(pairs) else np.zeros(0)
    keys = np.array([pair_key(samples[a].path, samples[b].path) not in kept for a, b in pairs], dtype=bool)
    confirmed = (scores >= modality.copy_limit) & keys         # a pair the user kept is no pair any more
    chosen, chosen_scores = pairs[confirmed], scores[confirmed]
    order = np.argsort(-chosen_scores, kind="stable")
    found = [NearDuplicate(samples[a].path, samples[b].path, round(float(s), 4), (samples[a].split, samples[b].split))
             for (a, b), s in zip(chosen[order], chosen_scores[order])]
    found.sort(key=lambda d: (not d.across_splits, -d.similarity))
    group_ids = groups_of(len(samples), chosen)
    members: dict[int, list[str]] = {}
    for index, group in enumerate(group_ids):
        members.setdefault(int(group), []).append(samples[index].path)
    groups = [paths for paths in members.values() if len(paths) > 1]
    return found, groups, method


def _odd_samples(modality, samples: list[Sample], signatures, similarity: np.ndarray, usable: np.ndarray,
                 kept: Collection[str]) -> list[OddSample]:
    reasons = dict(modality.odd_samples(samples, signatures))
    for index in far_from_all(similarity, usable):
        reasons.setdefault(int(index), OUTLIER_REASON)
    return [OddSample(samples[i].path, reason, samples[i].split) for i, reason in sorted(reasons.items())
            if samples[i].path not in kept]
