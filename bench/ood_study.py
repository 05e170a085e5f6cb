"""Which "unknown" score, and does temperature scaling calibrate: held-out-class experiments on real sets.

For each experiment a head is fitted as the default recipe fits it (frozen backbone features, logistic
regression with its L2 strength chosen by grouped cross-validation, engine.training.logistic) on the
known classes' training split; its temperature on their validation split; then every scorer of
engine.models.trust scores the known classes' test samples against
- near: the test samples of classes held out from training (a kind never taught, same domain);
- far: samples of another domain.
Printed per method: AUROC near and far, the share of known test samples accepted and of new ones rejected
at the threshold that accepts 95 % of validation; ECE on test before and after calibration.

    .venv/bin/python bench/ood_study.py [--sets fashion,elpv,texts]
"""
from __future__ import annotations

import argparse
import csv
import glob
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine.models import trust  # noqa: E402
from torch import nn  # noqa: E402

METHODS = ("msp", "energy", "mahalanobis", "relative-mahalanobis", "knn")
FUSIONS = (("msp", "knn"), ("msp", "relative-mahalanobis"), ("msp", "mahalanobis"),
           ("msp", "mahalanobis", "knn"))
CACHE = Path("/tmp/ood-study")


# -- features -----------------------------------------------------------------------------------------
def image_features(paths: list[str], backbone: str = "efficientnet_lite0") -> torch.Tensor:
    """Pooled frozen features of each image as evaluation sees it (kept on disk between runs)."""
    import hashlib
    key = hashlib.sha256(("|".join(paths) + backbone).encode()).hexdigest()[:16]
    path = CACHE / f"{key}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    from engine.data.images import load_image
    from engine.data.transforms import eval_transform
    from engine.models.catalog import create_model
    from engine.training.caches import pooled_features
    bundle = create_model(backbone, 2)
    transform = eval_transform(bundle.preprocessing)
    rows = []
    for start in range(0, len(paths), 32):
        batch = torch.stack([transform(load_image(p)) for p in paths[start:start + 32]])
        rows.append(pooled_features(bundle.model.eval(), batch))
    features = torch.cat(rows)
    CACHE.mkdir(exist_ok=True)
    torch.save(features, path)
    return features


def text_features(texts: list[str]) -> torch.Tensor:
    import hashlib
    key = hashlib.sha256(("\0".join(texts)).encode()).hexdigest()[:16]
    path = CACHE / f"t{key}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    from engine.core.control import RunControl
    from engine.modalities.text.inputs import EmbeddingCache
    from engine.modalities.text.model import create_text_model
    bundle = create_text_model("all-minilm-l6-v2", 2)
    cache = EmbeddingCache(bundle.model, bundle.tokenizer, folder=CACHE / "text")
    features = cache.embeddings(texts, RunControl(), lambda *a: None)
    CACHE.mkdir(exist_ok=True)
    torch.save(features, path)
    return features


# -- experiments ----------------------------------------------------------------------------------------
def folder_split(root: str, split: str) -> dict[str, list[str]]:
    return {Path(d).name: sorted(glob.glob(f"{d}/*")) for d in sorted(glob.glob(f"{root}/{split}/*"))}


def fashion_experiments():
    """fm-sessions (train/val/test from different photo sessions), three ways of holding classes out."""
    splits = {s: folder_split("/data/fm-sessions", s) for s in ("train", "val", "test")}
    far_paths = sorted(glob.glob("/data/elpv4/*/*"))[::8][:300] + skimage_photos()
    far = image_features(far_paths)
    feats = {s: {c: image_features(p) for c, p in splits[s].items()} for s in splits}
    for held in (("shirt", "sandal"), ("pullover", "sneaker"), ("coat", "bag")):
        yield f"fashion, {'+'.join(held)} new", feats, held, far


def elpv_experiments():
    """ELPV scans (far from ImageNet): defect probability 0/1 known; far: fashion photos. No near set:
    the four classes are grades of one defect, not kinds."""
    root = "/data/elpv-m2p"
    splits = {s: folder_split(root, s) for s in ("train", "val", "test")}
    feats = {s: {c: image_features(p) for c, p in splits[s].items()} for s in splits}
    far = image_features(sorted(glob.glob("/data/fm-sessions/test/*/*"))[::4])
    yield "elpv (far: fashion)", feats, (), far


def skimage_photos() -> list[str]:
    import skimage
    folder = Path(skimage.__file__).parent / "data"
    return [str(p) for p in sorted(folder.glob("*")) if p.suffix in (".png", ".jpg") and p.stat().st_size > 20000]


def text_experiments():
    rows = list(csv.DictReader(open("/data/fortunes8.csv", encoding="utf-8")))
    by_class: dict[str, list[str]] = {}
    for row in rows:
        by_class.setdefault(row["label"], []).append(row["text"])
    rng = np.random.default_rng(0)
    feats = {"train": {}, "val": {}, "test": {}}
    for label, texts in by_class.items():
        order = rng.permutation(len(texts))
        vectors = text_features(texts)[order]
        n = len(texts)
        feats["train"][label], feats["val"][label], feats["test"][label] = (
            vectors[: int(0.6 * n)], vectors[int(0.6 * n): int(0.8 * n)], vectors[int(0.8 * n):])
    far = text_features(license_sentences())
    labels = sorted(by_class)
    for held in (tuple(labels[:2]), tuple(labels[3:5]), tuple(labels[-2:])):
        yield f"fortunes, {'+'.join(held)} new", feats, held, far


def license_sentences(limit: int = 300) -> list[str]:
    text = " ".join(Path(p).read_text(errors="ignore") for p in sorted(glob.glob("/usr/share/common-licenses/*"))[:6])
    parts = [" ".join(s.split()) for s in text.replace("\n\n", ". ").split(". ")]
    return [p for p in parts if 40 < len(p) < 400][:limit]


HELD_OUT_CLASSES = 6        # classes held out in turn to estimate how well new kinds are turned away
HELD_OUT_PENALTY = 1e-2     # L2 of the stand-in logistic head, on standardised features
CANDIDATES = ("max:msp+knn", "msp", "knn", "mean:msp+knn")


def candidate_scorer(method: str, features: torch.Tensor, labels: torch.Tensor, classes: int,
                     known_features: torch.Tensor, known_logits: torch.Tensor, seed: int = 0) -> nn.Module:
    """A scorer named as in CANDIDATES ("combine:part+part" fuses parts standardised on the known inputs)."""
    if ":" not in method:
        return trust.fit_scorer(method, features, labels, classes, seed)
    combine, names = method.split(":", 1)
    parts = [trust.fit_scorer(name, features, labels, classes, seed) for name in names.split("+")]
    return trust.fuse(parts, known_features, known_logits, combine)


def held_out_class_auroc(features: torch.Tensor, labels: torch.Tensor, classes: int,
                         candidates=CANDIDATES, seed: int = 0) -> dict[str, list[float]]:
    """Per candidate score, its AUROC at telling apart a class the model was never taught from known
    inputs, for each of up to HELD_OUT_CLASSES classes held out in turn from the training features: a
    stand-in logistic head is fitted on 80 % of the other classes' samples, its temperature on the
    remaining 20 %, which are the known inputs scored against the held-out class."""
    from engine.training.logistic import solve  # noqa: I001
    labels = labels.long()
    present = [c for c in range(classes) if int((labels == c).sum()) >= 5]
    if len(present) < 3:
        return {}
    rng = np.random.default_rng(seed)
    held = rng.permutation(present)[:HELD_OUT_CLASSES]
    results: dict[str, list[float]] = {method: [] for method in candidates}
    for new_class in held:
        known = [c for c in present if c != new_class]
        index = {c: i for i, c in enumerate(known)}
        rows = np.flatnonzero(np.isin(labels.numpy(), known))
        evaluation = np.zeros(len(rows), dtype=bool)
        for c in known:                                   # 20 % of each known class, at least one
            members = np.flatnonzero(labels.numpy()[rows] == c)
            evaluation[rng.permutation(members)[:max(1, len(members) // 5)]] = True
        fit_rows, eval_rows = rows[~evaluation], rows[evaluation]
        fit_labels = torch.tensor([index[int(c)] for c in labels[fit_rows]])
        eval_labels = torch.tensor([index[int(c)] for c in labels[eval_rows]])
        x = features[fit_rows].float()
        mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
        weight, bias = solve((x - mean) / std, fit_labels.numpy(), len(known), HELD_OUT_PENALTY)

        def logits_of(rows_):
            return ((features[rows_].float() - mean) / std) @ weight.T + bias
        temperature = trust.fit_temperature(logits_of(eval_rows), eval_labels)
        known_logits = logits_of(eval_rows) / temperature
        new_rows = np.flatnonzero(labels.numpy() == new_class)
        new_logits = logits_of(new_rows) / temperature
        for method in candidates:
            scorer = candidate_scorer(method, x, fit_labels, len(known), features[eval_rows].float(), known_logits, seed)
            with torch.no_grad():
                known_scores = scorer(features[eval_rows].float(), known_logits).numpy()
                new_scores = scorer(features[new_rows].float(), new_logits).numpy()
            results[method].append(trust.auroc(known_scores, new_scores))
    return results


class ClassKnn(nn.Module):
    """1 - cosine similarity to the k-th nearest training sample of the predicted class."""
    method = "knn-class"

    def __init__(self, bank, labels, k=5):
        super().__init__()
        self.bank = nn.functional.normalize(bank.float(), dim=-1)
        self.labels = labels
        self.k = k

    def forward(self, features, logits):
        unit = nn.functional.normalize(features.float(), dim=-1)
        similarity = unit @ self.bank.T
        predicted = logits.argmax(-1)
        mask = self.labels[None, :] == predicted[:, None]
        similarity = similarity.masked_fill(~mask, -2.0)
        return 1.0 - similarity.topk(self.k, dim=-1).values[:, -1]


class Residual(nn.Module):
    """ViM (Wang et al., 2022): the norm of the feature outside its principal subspace, scaled, minus the
    log-sum-exp of the logits (method "vim"), or the residual alone ("residual")."""

    def __init__(self, features, weight, bias, logits, dims, with_energy=True):
        super().__init__()
        self.origin = -torch.linalg.pinv(weight) @ bias
        centred = features.float() - self.origin
        _, _, v = torch.linalg.svd(centred, full_matrices=False)
        self.null = v[dims:].T
        residual = (centred @ self.null).norm(dim=-1)
        self.alpha = float(logits.amax(-1).mean() / residual.mean())
        self.with_energy = with_energy
        self.method = f"vim{dims}" if with_energy else f"residual{dims}"

    def forward(self, features, logits):
        residual = ((features.float() - self.origin) @ self.null).norm(dim=-1) * self.alpha
        return residual - torch.logsumexp(logits, -1) if self.with_energy else residual


def vector_scaling(logits: torch.Tensor, labels: torch.Tensor):
    """Vector scaling (Guo et al., 2017): per-class scale and bias on the logits, fitted by NLL on val."""
    scale = torch.ones(logits.shape[1], requires_grad=True)
    bias = torch.zeros(logits.shape[1], requires_grad=True)
    optimizer = torch.optim.LBFGS([scale, bias], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")
    x, y = logits.detach().clone(), labels.clone()

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(x * scale + bias, y)
        loss.backward()
        return loss
    optimizer.step(closure)
    return lambda z: z * scale.detach() + bias.detach()


class ImageNetSpace(nn.Module):
    """Scores in the space of the pretrained model's own 1000 ImageNet classes (its original head):
    "in-knn" k-NN cosine on ImageNet log-probabilities, "in-kl" the smallest KL divergence from each known
    class's mean ImageNet posterior (KL matching, Hendrycks et al., 2019)."""

    def __init__(self, weight, bias, features, labels, kind):
        super().__init__()
        self.weight, self.bias, self.kind = weight, bias, kind
        self.method = f"in-{kind}"
        posterior = self.posterior(features)
        if kind == "kl":
            self.means = torch.stack([posterior[labels == c].mean(0) for c in labels.unique()])
        else:
            self.bank = nn.functional.normalize(posterior.clamp_min(1e-8).log(), dim=-1)

    def posterior(self, features):
        return (features.float() @ self.weight.T + self.bias).softmax(-1)

    def forward(self, features, logits):
        p = self.posterior(features).clamp_min(1e-8)
        if self.kind == "kl":
            kl = (p[:, None, :] * (p[:, None, :].log() - self.means[None].clamp_min(1e-8).log())).sum(-1)
            return kl.amin(-1)
        unit = nn.functional.normalize(p.log(), dim=-1)
        return 1.0 - (unit @ self.bank.T).topk(10, dim=-1).values[:, -1]


def imagenet_head():
    from engine.models.catalog import create_model
    model = create_model("efficientnet_lite0", None).model
    classifier = model.get_classifier()
    return classifier.weight.detach(), classifier.bias.detach()


# -- one experiment -------------------------------------------------------------------------------------
def stack(feats: dict, classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.cat([feats[c] for c in classes])
    y = torch.cat([torch.full((len(feats[c]),), i) for i, c in enumerate(classes)])
    return x, y


def run(name, feats, held, far, rows):
    from engine.training.logistic import fit_head
    known = [c for c in feats["train"] if c not in held]
    x_train, y_train = stack(feats["train"], known)
    x_val, y_val = stack(feats["val"], known)
    x_test, y_test = stack(feats["test"], known)
    started = time.monotonic()
    head = fit_head(x_train[None], y_train.numpy(), len(known))
    logits = {k: x @ head.weight.T + head.bias for k, x in (("val", x_val), ("test", x_test))}
    temperature = trust.fit_temperature(logits["val"], y_val)
    ece_before = trust.expected_calibration_error(logits["test"].softmax(-1).numpy(), y_test.numpy())
    ece_after = trust.expected_calibration_error((logits["test"] / temperature).softmax(-1).numpy(), y_test.numpy())
    accuracy = float((logits["test"].argmax(1) == y_test).float().mean())
    vector = vector_scaling(logits["val"], y_val)
    ece_vector = trust.expected_calibration_error(vector(logits["test"]).softmax(-1).numpy(), y_test.numpy())
    accuracy_vector = float((vector(logits["test"]).argmax(1) == y_test).float().mean())

    print(f"\n{name}: {len(known)} known classes, train {len(y_train)}, test {len(y_test)}; test accuracy "
          f"{accuracy:.1%}; T = {temperature:.2f}; test ECE {ece_before:.3f} -> {ece_after:.3f}")
    print(f"  vector scaling instead: test ECE {ece_vector:.3f}, test accuracy {accuracy_vector:.1%}")
    sets = {"far": far}
    if held:
        sets["near"] = torch.cat([feats["test"][c] for c in held])

    def scores(scorer, x):
        with torch.no_grad():
            return scorer(x, (x @ head.weight.T + head.bias) / temperature).numpy()
    scorers = {m: trust.fit_scorer(m, x_train, y_train, len(known)) for m in METHODS}
    for parts in FUSIONS:
        for combine in ("mean", "max"):
            scorers[combine + ":" + "+".join(parts)] = trust.fuse([scorers[p] for p in parts], x_val,
                                                                  logits["val"] / temperature, combine)
    for k in (1, 3, 30):
        scorers[f"knn{k}"] = trust.NearestNeighbours(x_train, k)
    scorers["knn-class"] = ClassKnn(x_train, y_train)
    train_logits = x_train @ head.weight.T + head.bias
    for dims in (64, 256):
        for energy in (True, False):
            r = Residual(x_train, head.weight, head.bias, train_logits, min(dims, x_train.shape[1] // 2), energy)
            scorers[r.method] = r
    if x_train.shape[1] == 1280:
        weight_in, bias_in = imagenet_head()
        for kind in ("kl", "knn"):
            scorers[f"in-{kind}"] = ImageNetSpace(weight_in, bias_in, x_train, y_train, kind)
            scorers[f"max:msp+in-{kind}"] = trust.fuse([scorers["msp"], scorers[f"in-{kind}"]], x_val,
                                                       logits["val"] / temperature, "max")
        scorers["max:msp+knn+in-kl"] = trust.fuse([scorers["msp"], scorers["knn"], scorers["in-kl"]], x_val,
                                                  logits["val"] / temperature, "max")
    scorers["max:msp+knn-class"] = trust.fuse([scorers["msp"], scorers["knn-class"]], x_val, logits["val"] / temperature, "max")
    scorers["max:msp+residual64"] = trust.fuse([scorers["msp"], scorers["residual64"]], x_val, logits["val"] / temperature, "max")
    scorers["max:msp+knn+residual64"] = trust.fuse([scorers["msp"], scorers["knn"], scorers["residual64"]], x_val, logits["val"] / temperature, "max")
    began = time.monotonic()
    estimates = held_out_class_auroc(x_train, y_train, len(known))
    chosen = max(estimates, key=lambda m: np.mean(estimates[m]))
    print("  held-out-class estimate on train (%.1f s): " % (time.monotonic() - began) +
          ", ".join(f"{m} {np.mean(v):.3f}" for m, v in estimates.items()) + f" -> {chosen}")
    for method, scorer in scorers.items():
        threshold = trust.threshold_at({"thresholds": trust.threshold_grid(scores(scorer, x_val))}, 0.95)
        known_scores = scores(scorer, x_test)
        row = {"experiment": name, "method": method, "accept_known": float((known_scores <= threshold).mean()),
               "ece_before": ece_before, "ece_after": ece_after, "accuracy": accuracy}
        line = f"  {method:32s} accept known {row['accept_known']:.1%}"
        for kind, x in sets.items():
            new_scores = scores(scorer, x)
            row[f"auroc_{kind}"] = trust.auroc(known_scores, new_scores)
            row[f"reject_{kind}"] = float((new_scores > threshold).mean())
            line += f"  {kind}: AUROC {row[f'auroc_{kind}']:.3f} reject {row[f'reject_{kind}']:.1%}"
        print(line)
        rows.append(row)
    print(f"  ({time.monotonic() - started:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="fashion,elpv,texts")
    args = parser.parse_args()
    torch.manual_seed(0)
    makers = {"fashion": fashion_experiments, "elpv": elpv_experiments, "texts": text_experiments}
    rows: list[dict] = []
    for name in args.sets.split(","):
        for experiment in makers[name]():
            run(*experiment, rows)
    print("\nmean over experiments (near where there is one):")
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        near = [r["auroc_near"] for r in mine if "auroc_near" in r]
        print(f"  {method:32s} near {np.mean(near) if near else float('nan'):.3f}  far "
              f"{np.mean([r['auroc_far'] for r in mine]):.3f}  accept {np.mean([r['accept_known'] for r in mine]):.1%}")


if __name__ == "__main__":
    main()
