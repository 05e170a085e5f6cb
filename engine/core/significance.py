"""Honest choices between trained models: every candidate scored on the same held-out samples, an
incumbent replaced only by a difference larger than the noise of the comparison.

- Accuracy intervals: Wilson's score interval (Wilson 1927; Agresti & Coull 1998), sound on small splits.
- Paired comparison with the incumbent on the same samples: the exact McNemar test (Dietterich 1998, "Approximate
  statistical tests for comparing supervised classification learning algorithms"), one-sided, on the
  samples where exactly one of the two is right.
- Several candidates against one incumbent: Holm's step-down correction (Holm 1979), so trying more
  candidates does not make a lucky one more likely to win.
No torch and no scipy: the frozen app leaves scipy out, and these are a few lines of arithmetic. numpy only
where arrays come in, so the window's first paint (which shows intervals) does not wait for it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

ALPHA = 0.05                 # the chance, over all candidates together, of replacing an incumbent that is as good
Z95 = 1.959964
TYPICAL_DISAGREEMENT = 0.15  # share of samples on which two reasonable recipes differ (before any is trained)
SMALL_SPLIT = 0.05           # a validation split that cannot tell apart differences of 5 points is worth a warning


def wilson_interval(correct: int, count: int, z: float = Z95) -> tuple[float, float]:
    """95 % interval of an accuracy of `correct` out of `count` (Wilson score interval)."""
    if count <= 0:
        return 0.0, 1.0
    p = correct / count
    centre = (p + z * z / (2 * count)) / (1 + z * z / count)
    half = z * math.sqrt(p * (1 - p) / count + z * z / (4 * count * count)) / (1 + z * z / count)
    return max(0.0, centre - half), min(1.0, centre + half)


def binomial_upper_tail(successes: int, trials: int) -> float:
    """P(X >= successes) for X ~ Binomial(trials, 1/2): exact below 1,000 trials, else normal with a
    continuity correction (within 1e-3 there)."""
    if successes <= 0:
        return 1.0
    if successes > trials:
        return 0.0
    if trials < 1000:
        return sum(math.comb(trials, k) for k in range(successes, trials + 1)) / 2 ** trials
    z = (successes - 0.5 - trials / 2) / math.sqrt(trials / 4)
    return 0.5 * math.erfc(z / math.sqrt(2))


@dataclass
class Comparison:
    """A candidate against the incumbent on the same samples."""

    name: str
    accuracy: float
    interval: tuple[float, float]
    difference: float                 # candidate's accuracy minus the incumbent's
    difference_interval: tuple[float, float]
    wins: int                         # samples only the candidate gets right
    losses: int                       # samples only the incumbent gets right
    p_value: float                    # one-sided exact McNemar: how often chance alone gives these wins
    significant: bool = False         # after Holm's correction over every candidate compared

    def to_dict(self) -> dict:
        """As JSON holds it (intervals as lists)."""
        data = asdict(self)
        data.update(interval=list(self.interval), difference_interval=list(self.difference_interval))
        return data


def compare(name: str, candidate: np.ndarray, incumbent: np.ndarray) -> Comparison:
    """`candidate` and `incumbent`: per-sample correctness (bool) on the same samples in the same order."""
    import numpy as np
    candidate, incumbent = np.asarray(candidate, bool), np.asarray(incumbent, bool)
    count = len(candidate)
    wins = int(np.sum(candidate & ~incumbent))
    losses = int(np.sum(~candidate & incumbent))
    correct = int(candidate.sum())
    return Comparison(name, correct / max(count, 1), wilson_interval(correct, count), (wins - losses) / max(count, 1),
                      paired_difference_interval(wins, losses, count), wins, losses,
                      binomial_upper_tail(wins, wins + losses))


def paired_difference_interval(wins: int, losses: int, count: int, z: float = Z95) -> tuple[float, float]:
    """95 % interval of the difference of two accuracies measured on the same `count` samples (the paired
    Wald interval: only the samples where they disagree carry information)."""
    if count <= 0:
        return -1.0, 1.0
    difference = (wins - losses) / count
    spread = math.sqrt(max(wins + losses - (wins - losses) ** 2 / count, 0.0)) / count
    return max(-1.0, difference - z * spread), min(1.0, difference + z * spread)


def holm(p_values: list[float], alpha: float = ALPHA) -> list[bool]:
    """Which hypotheses Holm's step-down procedure rejects at family-wise level `alpha`."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    rejected = [False] * len(p_values)
    for rank, index in enumerate(order):
        if p_values[index] > alpha / (len(p_values) - rank):
            break
        rejected[index] = True
    return rejected


@dataclass
class Decision:
    """Which candidate replaces the incumbent (None: the incumbent stays) and why, in words."""

    winner: str | None
    comparisons: list[Comparison] = field(default_factory=list)
    reason: str = ""


def decide(incumbent_name: str, incumbent: np.ndarray, candidates: dict[str, np.ndarray], noun: str = "samples",
           alpha: float = ALPHA) -> Decision:
    """The incumbent stays unless some candidate is better by more than chance explains (exact McNemar,
    Holm-corrected over all candidates); among those that are, the most accurate (the earliest on a tie)."""
    comparisons = [compare(name, correct, incumbent) for name, correct in candidates.items()]
    for comparison, significant in zip(comparisons, holm([c.p_value for c in comparisons], alpha)):
        comparison.significant = significant and comparison.wins > comparison.losses
    better = [c for c in comparisons if c.significant]
    count = len(incumbent)
    if not comparisons:
        return Decision(None, [], f"{incumbent_name} is the only candidate")
    if not better:
        best = max(comparisons, key=lambda c: c.accuracy)
        return Decision(None, comparisons, (
            f"kept {incumbent_name}: no candidate was better by more than chance explains on {count} validation "
            f"{noun} (closest: {best.name}, {best.difference:+.1%}, {best.wins} won and {best.losses} lost, "
            f"p = {best.p_value:.2f} before correcting for {_plural(len(comparisons), 'candidate')})"))
    winner = max(better, key=lambda c: c.accuracy)
    return Decision(winner.name, comparisons, (
        f"{winner.name} replaced {incumbent_name}: {winner.difference:+.1%} on the same {count} validation {noun} "
        f"({winner.difference_interval[0]:+.1%} to {winner.difference_interval[1]:+.1%}; {winner.wins} won, "
        f"{winner.losses} lost; p = {winner.p_value:.2g}, significant after correcting for "
        f"{_plural(len(comparisons), 'candidate')})"))


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def detectable_difference(count: int, disagreement: float = TYPICAL_DISAGREEMENT, alpha: float = ALPHA) -> float:
    """The smallest accuracy difference a one-sided exact McNemar test at `alpha` can call real on `count`
    samples, when the two models disagree on a share `disagreement` of them: the fewest wins among the
    disagreements that chance alone would give less often than `alpha`."""
    disagreements = max(1, round(disagreement * count))
    for wins in range(disagreements // 2, disagreements + 1):
        if binomial_upper_tail(wins, disagreements) <= alpha:
            return (2 * wins - disagreements) / max(count, 1)
    return 1.0


def clearly_lower(accuracy: float, count: int, than: float, than_count: int, z: float = Z95) -> bool:
    """True when `accuracy` on `count` samples is below `than` on `than_count` other samples by more than
    both binomial errors together explain at 95 % (e.g. validation images against cross-validation inside
    the training images: then they come from other conditions)."""
    spread = math.sqrt(accuracy * (1 - accuracy) / max(count, 1) + than * (1 - than) / max(than_count, 1))
    return than - accuracy > z * max(spread, 1e-9)
