"""The unlabelled pool: photos or texts the user has beside the labelled set, read as samples without a label.

A pool is what the user dropped (folders and files of images; a .txt file with one text per line or a .csv
with a text column). It is read the way `predict` reads its inputs (engine.core.modality.prediction_items),
so everything that can be predicted on can be labelled. Samples the labelled set already holds are left out:
one sample is never both (those labelled from the pool stay in it, as the project's additions, which the
labelling loop reads as labels). Problems are listed as a scan lists them: unreadable files skipped (error),
odd samples kept but flagged (warning), samples already labelled or twice in the pool left out (info).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from engine.data.report import Problem, Sample, plural


ALREADY_LABELLED = "already labelled"
TWICE = "the same sample again in the pool"


@dataclass
class Pool:
    sources: list[str]
    samples: list[Sample]                 # label 0 and split 'train' stand for "none yet"
    problems: list[Problem] = field(default_factory=list)
    noun: str = "image"

    @property
    def content_hash(self) -> str:
        """Identity of the pool's samples, for the feature cache."""
        digest = hashlib.sha256()
        for sample in self.samples:
            digest.update(sample.path.encode() + b"\0" + (sample.text or "").encode() + b"\n")
        return "pool-" + digest.hexdigest()[:24]

    def summary(self) -> str:
        """One line for the report: how many, and what was wrong."""
        errors = sum(p.severity == "error" for p in self.problems)
        warnings = sum(p.severity == "warning" for p in self.problems)
        known = sum(p.reason == ALREADY_LABELLED for p in self.problems)
        twice = sum(p.reason == TWICE for p in self.problems)
        parts = [f"{plural(len(self.samples), 'unlabelled ' + self.noun)}"]
        if errors:
            parts.append(f"{errors} skipped (cannot be read)")
        if warnings:
            parts.append(f"{warnings} flagged")
        if known:
            parts.append(f"{known} already labelled, left out")
        if twice:
            parts.append(f"{twice} twice in the pool, left out")
        return ", ".join(parts)

    def format_text(self, max_paths_per_group: int = 20) -> str:
        """The pool's part of a dataset report: what is in it and every problem, grouped as a scan's are."""
        from engine.data.report import format_problems
        return "\n".join([f"Unlabelled pool: {', '.join(self.sources)}", self.summary(),
                          *format_problems(self.problems, max_paths_per_group)])

    def to_dict(self) -> dict:
        return {"sources": list(self.sources), "samples": len(self.samples), "summary": self.summary(),
                "problems": [{"path": p.path, "reason": p.reason, "severity": p.severity} for p in self.problems]}


def read_pool(sources: list[str], modality, *, labelled: set[str] = frozenset(), text_column: str | None = None) -> Pool:
    """The samples of `sources` for `modality` (engine.core.modality), without those in `labelled` (paths
    of labelled samples, or a text's own words). ValueError, one line, when nothing usable is in it."""
    if not sources:
        raise ValueError("choose a folder of unlabelled images or a file of unlabelled texts")
    items, skipped = modality.prediction_items(list(sources), text_column=text_column)
    problems = [Problem(s["path"], s["reason"], "error") for s in skipped]
    samples, seen = [], set()
    for origin, payload in items:
        text = modality.prediction_fields(payload).get("text")     # a text's words; None for a picture
        key = text if text is not None else str(origin)
        if key in seen:
            problems.append(Problem(str(origin), TWICE, "info"))
            continue
        seen.add(key)
        if key in labelled or str(origin) in labelled:
            problems.append(Problem(str(origin), ALREADY_LABELLED, "info"))
            continue
        samples.append(Sample(str(origin), 0, "train", text))
    if not samples:
        labelled_already = any(p.reason == ALREADY_LABELLED for p in problems)
        why = (" that are not labelled already" if labelled_already else
               f": {problems[0].reason}" if problems else "")
        raise ValueError(f"no unlabelled {modality.nouns} in {', '.join(sources)}{why}")
    return Pool(list(sources), samples, problems, modality.noun)


def labelled_keys(report) -> set[str]:
    """What marks a sample of `report` as labelled for `read_pool`: an image's path, a text's own words."""
    return {s.path for s in report.samples} | {s.text for s in report.samples if s.text is not None}


def flag_pool(pool: Pool, modality, *, control=None, progress=None) -> Pool:
    """`pool` with the samples that cannot be decoded dropped as errors and its odd ones (blank, dark,
    blurred, tiny; empty or not words: the modality's `odd_samples`, as the deep check flags them) kept as
    warnings, read without a model."""
    import numpy as np
    signatures = modality.audit_signatures(pool.samples, control=control, progress=progress)
    readable = np.ones(len(pool.samples), dtype=bool)
    if signatures is not None:
        readable &= np.array([s is not None for s in signatures], dtype=bool)
    kept = np.flatnonzero(readable)
    pool = without_unreadable(pool, readable)
    if signatures is not None:
        odd = modality.odd_samples(pool.samples, [signatures[i] for i in kept])
        pool.problems += [Problem(pool.samples[i].path, reason, "warning") for i, reason in sorted(odd.items())]
    return pool


def without_unreadable(pool: Pool, readable) -> Pool:
    """`pool` less the samples `readable` (a mask) marks False, each listed as a problem that skipped it."""
    problems = list(pool.problems) + [Problem(s.path, "cannot be read", "error")
                                      for s, ok in zip(pool.samples, readable) if not ok]
    return Pool(pool.sources, [s for s, ok in zip(pool.samples, readable) if ok], problems, pool.noun)


@dataclass
class PoolPass:
    """The pretrained backbone's features of the labelled set's training and validation samples and of the
    pool, as `frozen_pass` reads them: unreadable samples left out of both."""

    pool: Pool                   # as kept: undecodable or unreadable samples dropped (errors), odd ones flagged
    pool_features: object        # np.ndarray [len(pool.samples), D]
    features: object             # np.ndarray [N, D]: the readable train + val samples
    labels: object               # np.ndarray [N]
    splits: object               # np.ndarray [N]: 'train' | 'val'


def frozen_pass(report, pool: Pool, backbone: str, *, seed: int = 0, control=None, progress=None) -> PoolPass:
    """One pass of the pretrained `backbone` over `report`'s training and validation samples and over `pool`
    (through the feature cache a head-only fit and the deep check share), the pool decoded first so that a
    pool of nothing readable is one clear line (ValueError), not a failure inside the pass."""
    from dataclasses import replace

    import numpy as np

    from engine.core import modality as modalities
    from engine.core.control import RunControl
    from engine.core.progress import no_progress
    modality = modalities.of(report)
    control, progress = control or RunControl(), progress or no_progress
    pool = flag_pool(pool, modality, control=control, progress=progress)
    if not pool.samples:
        raise ValueError(f"none of the unlabelled {modality.nouns} could be read")
    samples = [s for s in report.samples if s.split in ("train", "val")]
    features = modality.frozen_features(report, samples, backbone, seed=seed, control=control,
                                        progress=progress).numpy()
    usable = np.isfinite(features).all(1)
    pool_features = modality.frozen_features(replace(report, content_hash=pool.content_hash), pool.samples, backbone,
                                             seed=seed, control=control, progress=progress).numpy()
    readable = np.isfinite(pool_features).all(1)          # changed on disk since: dropped as unreadable too
    return PoolPass(without_unreadable(pool, readable), pool_features[readable], features[usable],
                    np.array([s.label for s in samples])[usable], np.array([s.split for s in samples])[usable])
