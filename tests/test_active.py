"""What to label next (engine.active): the least certain samples, spread over what the model is unsure about,
on real photos and texts; `suggest` from the command line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_cli import run_cli
from test_text import write_fortunes_csv

from engine.active.acquire import choose_batch, margins, typical_batch
from engine.active.suggest import suggest
from engine.data.scan import scan_dataset
from engine.training.config import TrainConfig
from engine.training.datasets import scan_any
from engine.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "resources" / "demo" / "fashion-mnist"


def test_the_batch_is_the_least_certain_spread_over_groups_not_the_same_sample_twenty_times():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16)) * 10
    features = np.concatenate([centres[g] + rng.normal(size=(25, 16)) * 0.1 for g in range(4)])
    # group 0: the most uncertain by far; groups 1-2: unsure too; group 3: sure
    margin = np.concatenate([np.full(25, 0.01), np.full(25, 0.2), np.full(25, 0.3), np.full(25, 0.95)])
    probabilities = np.stack([(1 + margin) / 2, (1 - margin) / 2], 1)
    assert np.allclose(margins(probabilities), margin)
    chosen = choose_batch(features, probabilities, 3, prefilter=25)
    groups = {s.index // 25 for s in chosen}
    assert groups == {0, 1, 2}                       # margin alone would take three of group 0
    assert [s.margin for s in chosen] == sorted(s.margin for s in chosen) and chosen[0].index < 25
    assert len(choose_batch(features, probabilities, 200)) == 100


def test_typiclust_labels_the_most_typical_sample_of_the_largest_groups_no_label_covers():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(4, 16)) * 10
    sizes = (40, 30, 20, 10)
    features = np.concatenate([centres[g] + rng.normal(size=(n, 16)) * 0.3 for g, n in enumerate(sizes)])
    group = np.repeat(np.arange(4), sizes)
    labelled = np.zeros(len(features), dtype=bool)
    labelled[0] = True                                        # the largest group has a label already
    chosen = typical_batch(features, labelled, 2)
    assert [group[i] for i in chosen] == [1, 2]
    for i in chosen:                                          # near the middle of its group, not an edge
        members = features[group == group[i]]
        distance = np.linalg.norm(members - members.mean(0), axis=1)
        assert np.linalg.norm(features[i] - members.mean(0)) <= np.quantile(distance, 0.5)


@pytest.fixture(scope="module")
def photo_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("active") / "run"
    Trainer(scan_dataset(DEMO), TrainConfig(backbone="efficientnet_lite0", image_size=96, epochs=4, lr=3e-3), run).fit()
    return run


def test_suggest_spreads_over_real_photos_instead_of_re_encoded_copies_of_one(photo_run, tmp_path):
    """A pool of shirts and coats (the model's hardest classes) plus 12 re-encoded copies of the photo it
    is least sure of: a batch of 6 takes that photo's look once or twice, not six times."""
    pool = tmp_path / "pool"
    pool.mkdir()
    for folder in ("shirt", "coat", "pullover"):
        for path in sorted((DEMO / folder).glob("*.png")):
            Image.open(path).convert("RGB").save(pool / f"{folder}-{path.stem}.png")
    first = suggest(photo_run, [str(pool)], 1)["suggestions"][0]
    hardest = Image.open(first["path"])
    for quality in range(12):
        hardest.save(pool / f"copy-{quality}.jpg", quality=60 + 3 * quality)
    found = suggest(photo_run, [str(pool)], 6)
    names = [Path(row["path"]).name for row in found["suggestions"]]
    copies = [n for n in names if n.startswith("copy-") or n == Path(first["path"]).name]
    assert found["pool"] == 30 * 3 + 12 and len(names) == 6 and len(copies) <= 2
    row = found["suggestions"][0]
    assert row["suggested"] in ("shirt", "coat", "pullover", "t-shirt", "dress", "bag", "ankle-boot", "sandal",
                                "sneaker", "trouser") and 0 <= row["score"] <= 1 and "unsure between" in row["reason"]


def test_the_cli_lists_what_to_label_next_as_json(photo_run, tmp_path):
    done = run_cli("suggest", photo_run, DEMO / "shirt", "--count", "4", "--json")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert len(found["suggestions"]) == 4 and found["pool"] == len(list((DEMO / "shirt").glob("*.png")))
    assert all({"path", "suggested", "score", "reason"} <= set(row) for row in found["suggestions"])
    scores = [row["score"] for row in found["suggestions"]]
    assert scores == sorted(scores, reverse=True)
    run_cli("export", photo_run, "--onnx", tmp_path / "m.onnx", "--exporter", "legacy")
    refused = run_cli("suggest", tmp_path / "m.onnx", DEMO / "shirt")
    assert refused.returncode == 2 and "run folder" in refused.stderr


def test_with_few_labels_suggest_asks_for_typical_samples_of_groups_no_label_covers(tmp_path):
    """A run taught 7 photos per class (below 15): the pool is clustered with them, and the suggestions are
    the typical samples of the groups without a label: here, the fourth colour it has never seen."""
    from conftest import write_colour_dataset
    data = write_colour_dataset(tmp_path / "colours", per_class=10)
    report = scan_dataset(data)
    Trainer(report, TrainConfig(image_size=64, epochs=2, batch_size=8), tmp_path / "run").fit()
    write_colour_dataset(tmp_path / "pool", per_class=12, seed=5,
                         colours={"red": (220, 40, 40), "yellow": (230, 220, 30)})
    found = suggest(tmp_path / "run", [str(tmp_path / "pool")], 2)
    assert found["method"].startswith("typicality") and found["labels_in_run"] == len(report.split("train"))
    assert all("/yellow/" in row["path"] for row in found["suggestions"])
    assert "no label covers" in found["suggestions"][0]["reason"]


def test_suggest_ranks_texts_too(tmp_path):
    report = scan_any(write_fortunes_csv(tmp_path / "fortunes.csv"), seed=0)
    Trainer(report, TrainConfig(backbone="all-minilm-l6-v2", epochs=10, lr=1e-2), tmp_path / "run").fit()
    pool = tmp_path / "pool.txt"
    pool.write_text("\n".join(s.text.replace("\n", " ") for s in report.split("test")), encoding="utf-8")
    found = suggest(tmp_path / "run", [], 5, text_file=str(pool))
    assert len(found["suggestions"]) == 5 and found["suggestions"][0]["suggested"] in report.classes
