"""`suggest RUN POOL`: the pool's samples a trained run should have labelled next, each with the run's
suggested label and why (engine.active.acquire), read as `predict` reads them.

With few labels uncertainty is a poor guide (Hacohen et al. 2022; bench/active_learning.py: margin-based
choice lost to random on both photo sets at 2-12 labels per class, TypiClust won on fm-sessions and
fortunes): below LOW_BUDGET_PER_CLASS training labels per class the run's training samples and the pool are
clustered together and the most typical sample of each large group no label covers is suggested; from
there on, the least certain samples spread over what the model is unsure about. The threshold rests on
those three sets (ELPV's cross-over lay between 12 and 17 labels per class)."""
from __future__ import annotations

import numpy as np

from engine.active.acquire import LOW_BUDGET_PER_CLASS, Suggestion, choose_batch, pick, reason_for
from engine.core.control import RunControl
from engine.core.progress import Progress, no_progress

__all__ = ["LOW_BUDGET_PER_CLASS", "suggest"]


def suggest(run, pool: list[str], count: int, *, seed: int = 0, text_file=None, text_column=None,
            batch_size: int = 16, control: RunControl | None = None, progress: Progress | None = None) -> dict:
    """{"suggestions": [{path, suggested, score, runner_up, margin, unknown, reason}], "skipped": [...],
    "pool": N, "method": ..., "labels_in_run": N or None} for the `count` samples of `pool` (images,
    folders, texts, a text file) to label next. `run`: a run folder or checkpoint (its network's features
    judge which samples are alike)."""
    from engine.core import modality as modalities
    from engine.outputs.precision import training_rows
    from engine.outputs.predict import SampleError, load_classifier, resolve_checkpoint, softmax, unknown_threshold
    if count < 1:
        raise ValueError(f"--count must be 1 or more, not {count}")
    classifier = load_classifier(run, "cpu")
    if classifier.kind != "torch":
        raise ValueError("suggest needs the run folder or its checkpoint (an exported file keeps no features)")
    modality = modalities.of(classifier.meta)
    items, skipped = modality.prediction_items(pool, text_file=text_file, text_column=text_column)
    control, progress = control or RunControl(), progress or no_progress
    origins, inputs = [], []
    for origin, payload in items:
        try:
            inputs.append(modality.prediction_input(payload))
            origins.append(origin)
        except SampleError as exc:
            skipped.append({"path": origin, "reason": str(exc)})
    if not origins:
        raise ValueError(f"no {modality.noun} of the pool could be read" if skipped else f"no {modality.nouns} in the pool")
    logits, ood, features = _pass(classifier, inputs, batch_size, control, progress, "scoring")
    probabilities = softmax(logits)
    threshold = unknown_threshold(classifier.meta, None)
    _, run_dir = resolve_checkpoint(run)
    rows = training_rows(run_dir)
    labels_in_run = len(rows) if rows is not None else None
    typical = bool(rows) and len(rows) < LOW_BUDGET_PER_CLASS * len(classifier.classes)
    if typical:
        taught = [sample for sample in (modality.row_input(row) for row in rows) if sample is not None]
        known = _pass(classifier, taught, batch_size, control, progress, "reading the run's labels")[2]
        chosen, _ = pick(features, probabilities, known, len(classifier.classes), count, seed)
        method = f"typicality (TypiClust): the run has {len(rows)} labels, fewer than {LOW_BUDGET_PER_CLASS} per class"
    else:
        chosen = choose_batch(features, probabilities, count, seed=seed)
        method = "uncertainty + diversity (margin, k-means)"
    return {"suggestions": [_row(s, origins, classifier.classes, ood, threshold, typical) for s in chosen],
            "skipped": skipped, "pool": len(origins), "method": method, "labels_in_run": labels_in_run}


def _pass(classifier, inputs: list, batch_size: int, control: RunControl, progress: Progress, stage: str):
    """(calibrated logits, unknown scores or None, the features the head reads) of `inputs`."""
    from engine.training.calibration import classifier_inputs, view_mean
    logits, scores, features = [], [], []
    for start in range(0, len(inputs), batch_size):
        control.checkpoint()
        batch = inputs[start:start + batch_size]
        with classifier_inputs(classifier.model.model) as captured:
            batch_logits, batch_scores = classifier.scored(batch)
        logits.append(batch_logits)
        scores.append(batch_scores)
        features.append(view_mean(captured, len(batch)).numpy())
        progress(stage, min(start + batch_size, len(inputs)), len(inputs))
    ood = np.concatenate(scores) if scores and all(s is not None for s in scores) else None
    return np.concatenate(logits), ood, np.concatenate(features)


def _row(s: Suggestion, origins: list[str], classes: list[str], ood, threshold, typical: bool) -> dict:
    unknown = bool(ood is not None and threshold is not None and ood[s.index] > threshold)
    reason = reason_for(s, classes, typical)
    reason += "; unlike anything it was taught" if unknown else ""
    return {"path": origins[s.index], "suggested": classes[s.suggested], "score": round(s.score, 4),
            "runner_up": classes[s.runner_up], "margin": round(s.margin, 4), "unknown": unknown, "reason": reason}
