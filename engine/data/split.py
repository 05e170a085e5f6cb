"""Seeded, stratified splitting that keeps given splits and never splits identical files apart, and the
warnings only visible once every file has its split: duplicates, small or unbalanced classes, classes
missing from a given val/test split."""
from __future__ import annotations

import random

from engine.core.significance import SMALL_SPLIT, detectable_difference
from engine.data.listing import CARVE_VAL, Candidate
from engine.data.report import SPLITS, Problem

IMBALANCE_RATIO = 10


def assign_splits(usable, val_fraction: float, test_fraction: float, seed: int) -> dict[str, str]:
    """path -> split.  Given splits are kept; the rest is a stratified, seeded split.

    Files with identical content are kept together so a carved split never leaks.
    """
    splits: dict[str, str] = {}
    pools: dict[tuple[str, str | None], list] = {}
    for candidate, check in usable:
        if candidate.split in SPLITS:
            splits[candidate.path] = candidate.split
        else:
            pools.setdefault((candidate.label, candidate.split), []).append((candidate, check))
    for (label, mode), members in sorted(pools.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        test = 0.0 if mode == CARVE_VAL else test_fraction
        splits.update(_split_one_class(label, members, val_fraction, test, seed))
    return splits


def _split_one_class(label: str, members, val_fraction: float, test_fraction: float,
                     seed: int) -> dict[str, str]:
    units = _units_of_identical_content(members)
    random.Random(f"{seed}:{label}").shuffle(units)
    n_test, n_val = split_counts(len(units), val_fraction, test_fraction)
    result = {}
    for position, unit in enumerate(units):
        split = "test" if position < n_test else "val" if position < n_test + n_val else "train"
        for candidate in unit:
            result[candidate.path] = split
    return result


def _units_of_identical_content(members) -> list[list[Candidate]]:
    """Groups of same-bytes files, in an order independent of directory listing."""
    groups: dict[str, list[Candidate]] = {}
    for candidate, check in members:
        groups.setdefault(check.digest, []).append(candidate)
    units = [sorted(group, key=lambda c: (c.key, c.path)) for group in groups.values()]
    return sorted(units, key=lambda unit: (unit[0].key, unit[0].path))


def split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(test, val) counts for a class of n: rounded, >= 1 val from 3 images, >= 1 train."""
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


# --- warnings once every file has its split ----------------------------------------------


def duplicate_problems(rows) -> list[Problem]:
    by_digest: dict[str, list] = {}
    for candidate, check, split in rows:
        by_digest.setdefault(check.digest, []).append((candidate, split))
    problems = []
    for group in by_digest.values():
        if len(group) < 2:
            continue
        group.sort(key=lambda item: (SPLITS.index(item[1]), item[0].key, item[0].path))
        first, first_split = group[0]
        for candidate, split in group[1:]:
            reason = _duplicate_reason(first, first_split, candidate, split)
            problems.append(Problem(candidate.path, reason, "warning"))
    return problems


def _duplicate_reason(first: Candidate, first_split: str, other: Candidate, split: str) -> str:
    return duplicate_reason((first.label, first_split), (other.label, split), "image",
                            f"same content as {first.path}")


def duplicate_reason(first: tuple[str, str], other: tuple[str, str], noun: str, same_as: str) -> str:
    """Why a second copy of an item (its (label, split)) is a problem: two labels, leakage across splits, or
    a plain duplicate; `same_as` names the first copy ("same content as red/a.png")."""
    if first[0] != other[0]:
        a, b = sorted((first[0], other[0]))
        return f"same {noun} labelled as both '{a}' and '{b}': {same_as}"
    if first[1] != other[1]:
        return f"duplicate across splits (data leakage): {same_as}"
    return f"duplicate {noun}: {same_as}"


def class_size_problems(rows, classes, class_locations: dict[str, list[str]], root: str,
                        min_images: int) -> list[Problem]:
    totals = {name: 0 for name in classes}
    for candidate, _, _ in rows:
        totals[candidate.label] += 1
    problems = []
    for name in classes:
        if totals[name] < min_images:
            problems.append(Problem(
                _class_location(class_locations, name, root),
                f"few images: class '{name}' has only {totals[name]} usable "
                f"(at least {min_images} recommended)",
                "warning",
            ))
    largest = max(classes, key=lambda n: totals[n])
    smallest = min(classes, key=lambda n: totals[n])
    if totals[largest] >= IMBALANCE_RATIO * totals[smallest]:
        problems.append(Problem(
            root,
            f"class imbalance: '{largest}' has {totals[largest]} images, "
            f"'{smallest}' only {totals[smallest]}",
            "warning",
        ))
    return problems


def missing_split_problems(rows, classes, class_locations: dict[str, list[str]]) -> list[Problem]:
    """With a given val/test split, a class absent from it cannot be evaluated there."""
    present = {(c.label, split) for c, _, split in rows}
    given = {c.split for c, _, _ in rows if c.split in ("val", "test")}
    problems = []
    for split in sorted(given, key=SPLITS.index):
        for name in classes:
            if (name, split) not in present:
                location = _class_location(class_locations, name, "")
                problems.append(Problem(location, f"no {split} images for class '{name}'", "warning"))
    return problems


def validation_size_problems(splits: list[str], root: str, noun: str) -> list[Problem]:
    """A validation split too small to tell recipes apart: the smallest accuracy difference a paired test
    can tell from chance on it (engine.core.significance.detectable_difference), when that is over
    SMALL_SPLIT."""
    count = splits.count("val")
    smallest = detectable_difference(count) if count else 0.0
    if smallest <= SMALL_SPLIT:
        return []
    return [Problem(root, f"small validation split: with {count} {noun} ({100 / count:.1f} points each), two "
                          f"models must differ by about {100 * smallest:.0f} points before chance no longer explains "
                          f"it; the automatic search keeps the default recipe unless a candidate is that much "
                          f"better: more validation {noun} make the choice sharper", "warning")]


def _class_location(class_locations: dict[str, list[str]], name: str, fallback: str) -> str:
    locations = class_locations.get(name)
    return locations[0] if locations else fallback

