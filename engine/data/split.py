"""Seeded, stratified splitting that keeps given splits and never splits identical samples apart, and the
warnings only visible once every sample has its split: duplicates, small or unbalanced classes, classes
missing from a given val/test split.  Modality-free: samples are `engine.data.pipeline.Candidate`s, and
messages name them with the reader's noun ("image", "text")."""
from __future__ import annotations

import random
from collections import Counter
from typing import Callable

from engine.core.significance import SMALL_SPLIT, detectable_difference
from engine.data.report import SPLITS, Problem, plural

IMBALANCE_RATIO = 10

SPLIT_FOLDER_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}

# Split markers for samples whose split we must choose ourselves.
CARVE_ALL = None  # no split given: carve train/val/test
CARVE_VAL = "train-pool"  # given as train, but no val given: carve val out of it


def assign_splits(candidates, val_fraction: float, test_fraction: float, seed: int,
                  unit_of: Callable = lambda candidate: candidate.content) -> list[str]:
    """The split of every candidate: given splits kept, the rest a seeded split stratified by class.

    Samples with the same `unit_of` (identical content) form one unit that lands in one split, and a sample
    without a split follows such a sample whose split was given, so choosing splits never leaks a sample
    across them.
    """
    splits: list[str | None] = [c.split if c.split in SPLITS else None for c in candidates]
    given_split_of: dict = {}
    for candidate, split in zip(candidates, splits):
        if split is not None:
            given_split_of.setdefault(unit_of(candidate), split)
    units: dict = {}
    for index, candidate in enumerate(candidates):
        if splits[index] is not None:
            continue
        unit = unit_of(candidate)
        if candidate.split is CARVE_ALL and unit in given_split_of:
            splits[index] = given_split_of[unit]
        else:
            units.setdefault(unit, []).append(index)
    for index, split in _split_units(candidates, units, val_fraction, test_fraction, seed).items():
        splits[index] = split
    return splits  # type: ignore[return-value]


def _split_units(candidates, units: dict, val_fraction: float, test_fraction: float,
                 seed: int) -> dict[int, str]:
    """Units pooled by (class, carve mode), each pool shuffled from an order that ignores listing order."""
    pools: dict[tuple[str, str | None], list[tuple[tuple, list[int]]]] = {}
    for members in units.values():
        members = sorted(members, key=lambda i: candidates[i].sort_key)
        # identical samples, possibly labelled differently: stratified by the majority label
        label = Counter(candidates[i].label for i in members).most_common(1)[0][0]
        mode = CARVE_VAL if any(candidates[i].split == CARVE_VAL for i in members) else CARVE_ALL
        pools.setdefault((label, mode), []).append((candidates[members[0]].sort_key, members))
    result = {}
    for (label, mode), pool in pools.items():
        pool.sort(key=lambda unit: unit[0])
        random.Random(f"{seed}:{label}").shuffle(pool)
        n_test, n_val = split_counts(len(pool), val_fraction, 0.0 if mode == CARVE_VAL else test_fraction)
        for position, (_, members) in enumerate(pool):
            split = "test" if position < n_test else "val" if position < n_test + n_val else "train"
            result.update((i, split) for i in members)
    return result


def split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(test, val) counts for a class of n: rounded, >= 1 val from 3 samples, >= 1 train."""
    n_test = int(n * test_fraction + 0.5)
    n_val = int(n * val_fraction + 0.5)
    if n >= 3 and val_fraction > 0:
        n_val = max(n_val, 1)
    excess = n_test + n_val - max(n - 1, 0)
    if excess > 0:
        cut_test = min(excess, n_test)
        n_test -= cut_test
        n_val -= excess - cut_test
    return n_test, n_val


# --- warnings once every sample has its split --------------------------------------------
# `rows` are (candidate, split) pairs in report order: by split, then the candidate's `position`.


def duplicate_problems(rows, noun: str, same_as: str) -> list[Problem]:
    """Every copy after the first of an identical sample; the first is the earliest split, then `sort_key`."""
    groups: dict[str, list] = {}
    for candidate, split in rows:
        groups.setdefault(candidate.content, []).append((candidate, split))
    problems = []
    for group in groups.values():
        group.sort(key=lambda item: (SPLITS.index(item[1]), item[0].sort_key))
        first, first_split = group[0]
        for candidate, split in group[1:]:
            reason = duplicate_reason((first.label, first_split), (candidate.label, split), noun,
                                      f"{same_as} {first.where}")
            problems.append(Problem(candidate.where, reason, "warning"))
    return problems


def duplicate_reason(first: tuple[str, str], other: tuple[str, str], noun: str, same_as: str) -> str:
    """Why a second copy of an item (its (label, split)) is a problem: two labels, leakage across splits, or
    a plain duplicate; `same_as` names the first copy ("same content as red/a.png")."""
    if first[0] != other[0]:
        a, b = sorted((first[0], other[0]))
        return f"same {noun} labelled as both '{a}' and '{b}': {same_as}"
    if first[1] != other[1]:
        return f"duplicate across splits (data leakage): {same_as}"
    return f"duplicate {noun}: {same_as}"


def class_size_problems(rows, classes, class_locations: dict[str, list[str]], root: str, noun: str,
                        min_per_class: int) -> list[Problem]:
    """Classes too small to learn or to measure, and a largest class that drowns the smallest."""
    totals = Counter(candidate.label for candidate, _ in rows)
    problems = []
    for name in classes:
        if totals[name] < min_per_class:
            problems.append(Problem(
                class_location(class_locations, name, root),
                f"few {noun}s: class '{name}' has only {totals[name]} usable "
                f"(at least {min_per_class} recommended)",
                "warning",
            ))
    largest = max(classes, key=lambda n: totals[n])
    smallest = min(classes, key=lambda n: totals[n])
    if totals[largest] >= IMBALANCE_RATIO * totals[smallest]:
        problems.append(Problem(
            root,
            f"class imbalance: '{largest}' has {plural(totals[largest], noun)}, "
            f"'{smallest}' only {totals[smallest]}",
            "warning",
        ))
    return problems


def missing_split_problems(rows, classes, class_locations: dict[str, list[str]], noun: str) -> list[Problem]:
    """With a given val/test split, a class absent from it cannot be evaluated there."""
    present = {(c.label, split) for c, split in rows}
    given = {c.split for c, _ in rows if c.split in ("val", "test")}
    problems = []
    for split in sorted(given, key=SPLITS.index):
        for name in classes:
            if (name, split) not in present:
                location = class_location(class_locations, name, "")
                problems.append(Problem(location, f"no {split} {noun}s for class '{name}'", "warning"))
    return problems


def validation_size_problems(splits: list[str], root: str, noun: str) -> list[Problem]:
    """A validation split too small to tell recipes apart: the smallest accuracy difference a paired test
    can tell from chance on it (engine.core.significance.detectable_difference), when that is over
    SMALL_SPLIT.  `noun` is plural: "images"."""
    count = splits.count("val")
    smallest = detectable_difference(count) if count else 0.0
    if smallest <= SMALL_SPLIT:
        return []
    return [Problem(root, f"small validation split: with {count} {noun} ({100 / count:.1f} points each), two "
                          f"models must differ by about {100 * smallest:.0f} points before chance no longer explains "
                          f"it; the automatic search keeps the default recipe unless a candidate is that much "
                          f"better: more validation {noun} make the choice sharper", "warning")]


def class_location(class_locations: dict[str, list[str]], name: str, fallback: str) -> str:
    """Where a class-level problem points: the class's first folder or file."""
    locations = class_locations.get(name)
    return locations[0] if locations else fallback
