"""How well each pretrained backbone fits this dataset, before any fine-tuning.

For every backbone with offline weights: one pass of the frozen network over train + val (through the
feature cache, so a later head-only fit or search starts at once), the LogME score (engine.search.logme)
and a linear probe (the fitted head of engine.training.logistic) trained on the training images, with the
model's cost. The probe is scored as the recipe search judges its candidates: on the validation images,
with a 95 % interval. Cross-validation inside the training images (near-identical images kept in one
fold) is reported beside it, and when the validation images score clearly lower, the two come from
different conditions and the inside figure would mislead. The test split is never read.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from engine.core.control import RunControl
from engine.core.progress import Progress
from engine.core.significance import clearly_lower, wilson_interval
from engine.data.report import DatasetReport, Sample
from engine.models.catalog import ModelBundle, create_model, get_spec, list_backbones
from engine.search.crossval import FeatureViews
from engine.search.logme import logme_score
from engine.training.caches import FeatureCache, view_id, view_transform
from engine.training.folds import FOLDS
from engine.training.logistic import fit_head

STRONG, FAIR = 0.8, 0.5
"""Share of the errors of always answering the largest class that a linear probe removes: at least STRONG
means the frozen features already separate the classes well, below FAIR that they barely do."""


@dataclass
class Assessment:
    """One backbone's fit to the data; accuracies are fractions, `fit` is 'strong' | 'fair' | 'weak'."""

    backbone: str
    title: str
    logme: float
    probe_accuracy: float             # the honest estimate: on the validation images (else cross-validated)
    probe_interval: tuple[float, float]
    probe_protocol: str               # how probe_accuracy was measured, in words
    cv_accuracy: float                # cross-validation inside the training images, near-identical kept together
    cv_interval: tuple[float, float]
    folds: int
    shifted: bool                     # the validation images score lower than cross-validation by more than chance
    majority: float                   # accuracy of always answering the most frequent class
    fit: str
    ms_per_image: float               # PyTorch forward, one image at a time, on this machine
    params_millions: float
    input_size: int
    feature_dim: int
    seconds: float                    # feature pass (or cache hit) + scores
    features: FeatureViews | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("features")
        return data


def available_backbones() -> list[str]:
    """Backbones whose weights are on this machine, in catalog order (cheapest first)."""
    return [row["name"] for row in list_backbones() if row["weights_available"]]


def search_samples(report: DatasetReport) -> tuple[list[Sample], list[Sample]]:
    """The samples a search may learn from and score on: train and val (val may be empty); never test."""
    return report.split("train"), report.split("val")


def split_views(cache: FeatureCache, samples: list[Sample], report: DatasetReport, bundle: ModelBundle,
                views: tuple[str, ...], seed: int, control: RunControl | None,
                progress: Progress | None) -> torch.Tensor:
    """[V, N, D] features of `samples`, one cache entry per view: the same entries the Trainer reads, so a
    fit after the search computes nothing again."""
    if not samples:
        return torch.empty(len(views), 0, 0)
    pre = bundle.preprocessing
    paths, labels = [s.path for s in samples], [s.label for s in samples]
    return torch.cat([cache.features(paths, labels, report.content_hash, [view_transform(pre, view)],
                                     view_id(pre, view), seed, control, progress) for view in views])


def pretrained(report: DatasetReport, backbone: str, input_size: int | None = None) -> ModelBundle:
    """The backbone with its offline ImageNet weights, a fresh head for the classes, channels_last (as the
    Trainer runs it)."""
    bundle = create_model(backbone, len(report.classes), weights="pretrained", input_size=input_size)
    bundle.model.to(memory_format=torch.channels_last)
    return bundle


def backbone_features(report: DatasetReport, bundle: ModelBundle, views: tuple[str, ...] = ("plain",),
                      seed: int = 0, control: RunControl | None = None, progress: Progress | None = None,
                      limit: int | None = None) -> FeatureViews:
    """Frozen features of train + val (in that order; `held_out` marks val's rows) through `bundle`'s
    backbone; with `limit`, of a seeded stratified sample of at most that many of those images instead, each
    split in its share (the same sample every time)."""
    cache = FeatureCache(bundle.model)
    train, val = search_samples(report)
    if limit is not None and len(train) + len(val) > limit:
        share = limit / (len(train) + len(val))
        train, val = (assessment_sample(samples, round(share * len(samples)), seed) if samples else []
                      for samples in (train, val))
    groups = [train, val]
    cache.planned_images = len(views) * (len(train) + len(val))      # the break-even sees the whole pass
    parts = [split_views(cache, samples, report, bundle, views, seed, control, progress)
             for samples in groups if samples]
    labels = np.array([s.label for samples in groups for s in samples], dtype=np.int64)
    held_out = np.array([False] * len(train) + [True] * len(val))
    return FeatureViews(torch.cat(parts, dim=1), labels, held_out)


def assessment_sample(samples: list[Sample], limit: int, seed: int = 0) -> list[Sample]:
    """At most `limit` samples in the class proportions of `samples` (every class kept), in their order."""
    labels = np.array([s.label for s in samples])
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        keep = max(min(len(members), FOLDS), round(limit * len(members) / len(samples)))
        chosen.extend(rng.permutation(members)[:keep])
    return [samples[i] for i in sorted(chosen)]


def assess_backbone(report: DatasetReport, backbone: str, seed: int = 0, control: RunControl | None = None,
                    progress: Progress | None = None, input_size: int | None = None,
                    limit: int | None = None, device: torch.device | None = None) -> Assessment:
    """One backbone's scores; `input_size` None is the backbone's own (as in TrainConfig.image_size);
    `limit` scores a stratified sample of at most that many train + val images (see backbone_features).
    `device`: where the frozen pass runs (the CPU by default); the cost per image is always the CPU's."""
    started = time.monotonic()
    bundle = pretrained(report, backbone, input_size)
    if device is not None and device.type != "cpu":
        bundle.model.to(device)
    data = backbone_features(report, bundle, ("plain",), seed, control, progress, limit)
    bundle.model.to("cpu")
    train = data.part(held_out=False)
    classes = len(report.classes)
    probe = fit_head(train.views, train.labels, classes, seed=seed, control=control)
    cv_correct = round(probe.cv_accuracy * len(train.labels))
    estimate = ProbeEstimate(probe.cv_accuracy, wilson_interval(cv_correct, len(train.labels)),
                             f"{probe.folds}-fold cross-validation inside the training images")
    shifted = False
    if data.held_out is not None and data.held_out.any():
        val = data.part(held_out=True)
        correct = int(((val.views[0] @ probe.weight.T + probe.bias).argmax(1).numpy() == val.labels).sum())
        inside = estimate
        estimate = ProbeEstimate(correct / len(val.labels), wilson_interval(correct, len(val.labels)),
                                 f"trained on the training images, scored on {len(val.labels)} validation images")
        shifted = clearly_lower(estimate.accuracy, len(val.labels), inside.accuracy, len(train.labels))
    majority = float(np.bincount(train.labels).max() / len(train.labels))
    return Assessment(
        backbone=backbone, title=get_spec(backbone).title, logme=logme_score(train.views[0].numpy(), train.labels),
        probe_accuracy=estimate.accuracy, probe_interval=estimate.interval, probe_protocol=estimate.protocol,
        cv_accuracy=probe.cv_accuracy, cv_interval=wilson_interval(cv_correct, len(train.labels)),
        folds=probe.folds, shifted=shifted, majority=majority, fit=fit_level(estimate.accuracy, majority),
        ms_per_image=forward_ms(bundle), params_millions=sum(p.numel() for p in bundle.model.parameters()) / 1e6,
        input_size=bundle.preprocessing.input_size, feature_dim=int(data.views.shape[-1]),
        seconds=time.monotonic() - started, features=data)


@dataclass
class ProbeEstimate:
    accuracy: float
    interval: tuple[float, float]
    protocol: str


def assess_backbones(report: DatasetReport, backbones: list[str] | None = None, seed: int = 0,
                     control: RunControl | None = None, progress: Progress | None = None,
                     input_size: int | None = None, device: torch.device | None = None) -> list[Assessment]:
    """Every available backbone (or those named), best first; their frozen passes on `device`."""
    if len(report.split("train")) < 2:
        raise ValueError("assessing backbones needs at least two training images")
    for name in backbones or []:
        get_spec(name)                 # an unknown name fails before any work
    results = [assess_backbone(report, name, seed, control, progress, input_size, device=device)
               for name in (backbones or available_backbones())]
    return ranked(results)


def ranked(results: list[Assessment]) -> list[Assessment]:
    """Best first: by the probe's honest estimate (what a head will reach on new images), LogME breaking
    ties."""
    return sorted(results, key=lambda a: (-round(a.probe_accuracy, 3), -a.logme))


def fit_level(accuracy: float, majority: float) -> str:
    removed = (accuracy - majority) / max(1.0 - majority, 1e-9)
    return "strong" if removed >= STRONG else "fair" if removed >= FAIR else "weak"


@torch.inference_mode()
def forward_ms(bundle: ModelBundle, repeats: int = 5) -> float:
    """Milliseconds for one image through the whole network (batch 1, one thread), the best of a few runs:
    a cost to compare backbones by. One thread because two gave 33 to 2,480 ms for the same network when
    other work shared the 2 cores, one thread a stable figure."""
    from engine.search.crossval import one_thread
    model = bundle.model.eval()
    size = bundle.preprocessing.input_size
    image = torch.zeros(1, 3, size, size).contiguous(memory_format=torch.channels_last)
    best = float("inf")
    with one_thread():
        model(image)
        for _ in range(repeats):
            began = time.perf_counter()
            model(image)
            best = min(best, time.perf_counter() - began)
    return best * 1000


def summary(results: list[Assessment], classes: list[str] | None = None) -> str:
    """Plain words: which backbone knows this kind of image best, how sure that figure is, whether the
    validation images look like the training images, and what that means for training."""
    if not results:
        return "No backbone with offline weights to assess."
    best = results[0]
    low, high = best.probe_interval
    where = "on the validation images" if "validation" in best.probe_protocol else \
        "in cross-validation inside the training images"
    line = (f"{best.title} fits these images best: a linear probe on its frozen features reaches "
            f"{best.probe_accuracy:.0%} {where} (95 % interval {low:.0%}–{high:.0%}), against "
            f"{best.majority:.0%} for always answering the largest class.")
    if best.shifted:
        line += (f" Cross-validation inside the training images says {best.cv_accuracy:.0%}: the validation "
                 "images differ from the training images (another session, camera or batch?), so expect new "
                 "images to score nearer the validation figure.")
    if best.fit == "strong":
        advice = "Its features already separate the classes well: head-only training should do well."
    elif best.fit == "fair":
        advice = ("The features separate the classes only in part: training the last blocks as well is "
                  "likely to pay off.")
    else:
        advice = ("None of the backbones knows this kind of image well: train deeper layers (the last blocks "
                  "or everything) and add more images if you can.")
    return f"{line} {advice}"


def format_table(results: list[Assessment]) -> str:
    """The table `main.py assess` prints."""
    header = (f"{'backbone':<20} {'LogME':>7} {'probe (95 % interval)':>22} {'CV in train':>12} {'fit':>7} "
              f"{'ms/image':>9} {'params':>8} {'size':>5}")
    rows = [header, "-" * len(header)]
    for a in results:
        low, high = a.probe_interval
        probe = f"{a.probe_accuracy:.1%} ({low:.0%}-{high:.0%})"
        inside = f"{a.cv_accuracy:.1%}{' !' if a.shifted else ''}"
        rows.append(f"{a.backbone:<20} {a.logme:>7.3f} {probe:>22} {inside:>12} {a.fit:>7} {a.ms_per_image:>9.1f} "
                    f"{a.params_millions:>7.1f}M {a.input_size:>5}")
    if results:
        rows.append(f"probe: {results[0].probe_protocol}; CV in train: cross-validation inside the training "
                    "images, near-identical images kept in one fold" +
                    ("; !: the validation images score clearly lower (other conditions)" if any(
                        a.shifted for a in results) else ""))
    return "\n".join(rows)
