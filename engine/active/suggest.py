"""`suggest RUN POOL`: the pool's samples a trained run should have labelled next, each with the run's
suggested label and why (engine.active.acquire), read as `predict` reads them."""
from __future__ import annotations

import numpy as np

from engine.active.acquire import Suggestion, choose_batch
from engine.core.control import RunControl
from engine.core.progress import Progress, no_progress


def suggest(run, pool: list[str], count: int, *, seed: int = 0, text_file=None, text_column=None,
            batch_size: int = 16, control: RunControl | None = None, progress: Progress | None = None) -> dict:
    """{"suggestions": [{path, suggested, score, runner_up, margin, unknown, reason}], "skipped": [...],
    "pool": N} for the `count` samples of `pool` (images, folders, texts, a text file) to label next.
    `run`: a run folder or checkpoint (its network's features judge which samples are alike)."""
    from engine.core import modality as modalities
    from engine.outputs.predict import SampleError, load_classifier, unknown_threshold
    from engine.training.calibration import classifier_inputs, view_mean
    if count < 1:
        raise ValueError(f"--count must be 1 or more, not {count}")
    classifier = load_classifier(run, "cpu")
    if classifier.kind != "torch":
        raise ValueError("suggest needs the run folder or its checkpoint (an exported file keeps no features)")
    modality = modalities.of(classifier.meta)
    items, skipped = modality.prediction_items(pool, text_file=text_file, text_column=text_column)
    control, progress = control or RunControl(), progress or no_progress
    origins, logits, scores, features = [], [], [], []
    for start in range(0, len(items), batch_size):
        control.checkpoint()
        batch, kept = [], []
        for origin, payload in items[start:start + batch_size]:
            try:
                batch.append(modality.prediction_input(payload))
                kept.append(origin)
            except SampleError as exc:
                skipped.append({"path": origin, "reason": str(exc)})
        if batch:
            with classifier_inputs(classifier.model.model) as captured:
                batch_logits, batch_scores = classifier.scored(batch)
            origins += kept
            logits.append(batch_logits)
            scores.append(batch_scores)
            features.append(view_mean(captured, len(batch)).numpy())
        progress("scoring", min(start + batch_size, len(items)), len(items))
    if not origins:
        raise ValueError(f"no {modality.noun} of the pool could be read" if skipped else f"no {modality.nouns} in the pool")
    logits = np.concatenate(logits)
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    threshold = unknown_threshold(classifier.meta, None)
    ood = np.concatenate(scores) if all(s is not None for s in scores) else None
    chosen = choose_batch(np.concatenate(features), probabilities, count, seed=seed)
    rows = [_row(s, origins, classifier.classes, ood, threshold) for s in chosen]
    return {"suggestions": rows, "skipped": skipped, "pool": len(origins)}


def _row(s: Suggestion, origins: list[str], classes: list[str], ood, threshold) -> dict:
    unknown = bool(ood is not None and threshold is not None and ood[s.index] > threshold)
    reason = (f"unsure between {classes[s.suggested]} and {classes[s.runner_up]} (margin {s.margin:.2f})"
              + ("; unlike anything it was taught" if unknown else ""))
    return {"path": origins[s.index], "suggested": classes[s.suggested], "score": round(s.score, 4),
            "runner_up": classes[s.runner_up], "margin": round(s.margin, 4), "unknown": unknown, "reason": reason}
