"""Decoded-image cache: identical eval pixels, memory and disk storage, reuse, invalidation, fallback."""
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import engine.data.imagecache as imagecache
from engine.core.control import Cancelled, RunControl
from engine.data.imagecache import DecodedImageCache, estimate_bytes
from engine.data.images import load_image
from engine.data.preprocessing import Preprocessing
from engine.data.scan import scan_dataset
from engine.data.transforms import ImageDataset, eval_transform, train_transform
from engine.training.config import TrainConfig
from engine.training.trainer import Trainer

PREPROCESSINGS = [Preprocessing(64, interpolation="bicubic"), Preprocessing(64, interpolation="bilinear"),
                  Preprocessing(224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic")]


@pytest.fixture
def mixed_images(tmp_path) -> list[str]:
    """Sizes below and above the resize size, both orientations, grey, alpha, JPEG with EXIF rotation."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "mixed"
    folder.mkdir()

    def noise(h, w, c=3):
        return rng.integers(0, 256, size=(h, w, c) if c > 1 else (h, w), dtype=np.uint8)

    Image.fromarray(noise(40, 40)).save(folder / "small.png")
    Image.fromarray(noise(200, 300)).save(folder / "landscape.jpg", quality=90)
    Image.fromarray(noise(333, 150, 1)).save(folder / "portrait_grey.png")
    Image.fromarray(noise(120, 90, 4), mode="RGBA").save(folder / "alpha.png")
    rotated = Image.fromarray(noise(100, 200))
    exif = rotated.getexif()
    exif[0x0112] = 6
    rotated.save(folder / "exif_rotated.jpg", exif=exif)
    return sorted(str(p) for p in folder.iterdir())


@pytest.mark.parametrize("pre", PREPROCESSINGS, ids=["bicubic64", "bilinear64", "lite0-224"])
@pytest.mark.parametrize("budget", [None, 0], ids=["memory", "disk"])
def test_eval_transform_gives_identical_pixels_with_the_cache(mixed_images, tmp_path, pre, budget):
    images, note = DecodedImageCache(tmp_path / "cache", budget=budget).build(mixed_images, "hash", pre)
    assert images.where == ("memory" if budget is None else "disk"), note
    transform = eval_transform(pre)
    for index, path in enumerate(mixed_images):
        stored = images.image(index)
        assert min(stored.size) == pre.resize_size
        assert torch.equal(transform(stored), transform(load_image(path))), path


def test_training_transforms_run_on_cached_images(mixed_images, tmp_path):
    pre = PREPROCESSINGS[0]
    images, _ = DecodedImageCache(tmp_path / "cache").build(mixed_images, "hash", pre)
    for augmentation in ("light", "strong"):
        batch = train_transform(pre, augmentation)(images.image(0))
        assert batch.shape == (3, 64, 64)


def test_disk_cache_is_reused_by_a_later_run_without_decoding(mixed_images, tmp_path, monkeypatch):
    pre = PREPROCESSINGS[0]
    first, _ = DecodedImageCache(tmp_path / "cache", budget=0).build(mixed_images, "hash", pre)
    monkeypatch.setattr(imagecache, "load_image", _must_not_decode)
    again, note = DecodedImageCache(tmp_path / "cache", budget=0).build(mixed_images, "hash", pre)
    assert "reused" in note
    assert all(np.array_equal(first.arrays[i], again.arrays[i]) for i in range(len(mixed_images)))


def _must_not_decode(path):
    raise AssertionError(f"decoded {path} again")


@pytest.mark.parametrize("change", ["content", "size", "interpolation", "paths"])
def test_a_different_dataset_or_preprocessing_never_reuses_a_disk_cache(mixed_images, tmp_path, change):
    pre = PREPROCESSINGS[0]
    cache = DecodedImageCache(tmp_path / "cache", budget=0)
    cache.build(mixed_images, "hash", pre)
    args = {"content": (mixed_images, "other-hash", pre),
            "size": (mixed_images, "hash", pre.with_size(96)),
            "interpolation": (mixed_images, "hash", PREPROCESSINGS[1]),
            "paths": (mixed_images[::-1], "hash", pre)}[change]
    _, note = cache.build(*args)
    assert "reused" not in note


def test_a_damaged_disk_cache_is_rebuilt(mixed_images, tmp_path):
    pre = PREPROCESSINGS[0]
    cache = DecodedImageCache(tmp_path / "cache", budget=0)
    first, _ = cache.build(mixed_images, "hash", pre)
    data = next((tmp_path / "cache").glob("*.u8"))
    del first
    data.write_bytes(data.read_bytes()[:-10])
    rebuilt, note = cache.build(mixed_images, "hash", pre)
    assert "reused" not in note and rebuilt.where == "disk"
    assert torch.equal(eval_transform(pre)(rebuilt.image(1)), eval_transform(pre)(load_image(mixed_images[1])))


def test_only_a_few_disk_caches_are_kept(mixed_images, tmp_path):
    cache = DecodedImageCache(tmp_path / "cache", budget=0)
    for version in range(imagecache.DISK_CACHES_KEPT + 3):
        cache.build(mixed_images, f"hash-{version}", PREPROCESSINGS[0])
    assert len(list((tmp_path / "cache").glob("*.u8"))) == imagecache.DISK_CACHES_KEPT + 1


def test_no_cache_with_a_reason_when_neither_memory_nor_disk_has_room(mixed_images, tmp_path, monkeypatch):
    monkeypatch.setattr(imagecache.shutil, "disk_usage", lambda path: type("U", (), {"free": 1000})())
    images, note = DecodedImageCache(tmp_path / "cache", budget=0).build(mixed_images, "h", PREPROCESSINGS[0])
    assert images is None and "fits neither in memory" in note


def test_the_size_estimate_is_close(mixed_images, tmp_path):
    pre = PREPROCESSINGS[2]
    images, _ = DecodedImageCache(tmp_path / "cache").build(mixed_images, "hash", pre)
    assert estimate_bytes(mixed_images, pre.resize_size) == pytest.approx(images.nbytes, rel=0.01)


def test_decoding_can_be_cancelled(mixed_images, tmp_path):
    control = RunControl()
    control.cancel()
    with pytest.raises(Cancelled):
        DecodedImageCache(tmp_path / "cache").build(mixed_images, "hash", PREPROCESSINGS[0], control)


def test_an_image_source_works_in_dataloader_workers(mixed_images, tmp_path):
    pre = PREPROCESSINGS[0]
    images, _ = DecodedImageCache(tmp_path / "cache").build(mixed_images, "hash", pre)
    source = images.source([4, 0])
    pickle.dumps(source)
    dataset = ImageDataset([mixed_images[4], mixed_images[0]], [0, 1], eval_transform(pre), source)
    batch, labels = next(iter(DataLoader(dataset, batch_size=2, num_workers=1)))
    assert torch.equal(batch[0], eval_transform(pre)(load_image(mixed_images[4])))


def test_fine_tuning_decodes_every_image_once(colour_dataset, tmp_path, monkeypatch):
    """Epoch 2 and evaluation read cached pixels: the plain loader never decodes."""
    decoded = []
    monkeypatch.setattr(imagecache, "load_image", lambda path: decoded.append(path) or load_image(path))
    monkeypatch.setattr("engine.data.transforms.load_image", _must_not_decode)
    report = scan_dataset(colour_dataset, seed=0)
    trainer = Trainer(report, TrainConfig(image_size=64, batch_size=8, epochs=2, freeze="none"), tmp_path / "r")
    assert trainer.fit().status == "completed"
    assert sorted(decoded) == sorted(s.path for s in report.samples)
    assert any("decoded images: in memory" in note for note in trainer.path_notes)


def _count_decodes(monkeypatch) -> list[str]:
    decoded: list[str] = []

    def counting(path):
        decoded.append(path)
        return load_image(path)
    monkeypatch.setattr(imagecache, "load_image", counting)
    monkeypatch.setattr("engine.data.transforms.load_image", counting)
    return decoded


def test_head_only_reads_each_image_once_and_a_second_run_reads_none(colour_dataset, tmp_path, monkeypatch):
    """One view: features are computed from each file once, so no decoded-image cache is built; a later
    run on the same data and backbone takes the features from disk without opening an image."""
    decoded = _count_decodes(monkeypatch)
    report = scan_dataset(colour_dataset, seed=0)
    config = TrainConfig(image_size=64, batch_size=8, epochs=2, augmentation="none")
    first = Trainer(report, config, tmp_path / "r1")
    assert first.fit().status == "completed"
    assert sorted(decoded) == sorted(s.path for s in report.samples)
    assert not any("decoded images" in note for note in first.path_notes), first.path_notes
    decoded.clear()
    again = Trainer(report, config, tmp_path / "r2")
    assert again.fit().status == "completed"
    assert decoded == [] and again.inputs.feature_cache.misses == 0


def test_augmented_views_decode_each_image_once(colour_dataset, tmp_path, monkeypatch):
    decoded = _count_decodes(monkeypatch)
    report = scan_dataset(colour_dataset, seed=0)
    config = TrainConfig(image_size=64, batch_size=8, epochs=1, augmentation="light", cached_views=3)
    trainer = Trainer(report, config, tmp_path / "r")
    assert trainer.fit().status == "completed"
    assert sorted(decoded) == sorted(s.path for s in report.samples)
    assert any("decoded images: in memory" in note for note in trainer.path_notes)


def test_a_cache_folder_that_cannot_be_written_means_no_cache_not_a_failure(mixed_images, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    images, note = DecodedImageCache(blocker / "images", budget=0).build(mixed_images, "hash", PREPROCESSINGS[0])
    assert images is None and "cannot write" in note


def test_training_completes_when_the_cache_folder_cannot_be_written(colour_dataset, tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("TRANSFERLAB_CACHE_DIR", str(blocker))
    report = scan_dataset(colour_dataset, seed=0)
    result = Trainer(report, TrainConfig(image_size=64, batch_size=8, epochs=1), tmp_path / "r").fit()
    assert result.status == "completed" and result.metrics["val_accuracy"] is not None
    assert "features not kept on disk" in caplog.text
