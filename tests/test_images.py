"""engine.data.images: every colour mode ends up as correct 8-bit RGB, and bad files get a clear reason."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.data import images
from engine.data.images import ImageError, ImageInfo, check_image, is_hidden_or_system, load_image, to_rgb


def noisy_rgb(seed: int, size: int = 32) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def pixel(path_or_image, xy=(0, 0)):
    im = load_image(path_or_image) if isinstance(path_or_image, Path) else path_or_image
    assert im.mode == "RGB"
    return im.getpixel(xy)


def close_to(actual, expected, tolerance=3):
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected))


def png_with_declared_size(path: Path, width: int, height: int) -> Path:
    """A tiny file whose header claims an enormous image: a decompression bomb stand-in."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))
    return path


# -- mode conversions ---------------------------------------------------------------------------
def test_grey_becomes_rgb(tmp_path):
    path = tmp_path / "grey.png"
    Image.new("L", (8, 8), 100).save(path)
    assert pixel(path) == (100, 100, 100)


def test_one_bit_becomes_black_and_white(tmp_path):
    path = tmp_path / "bits.png"
    Image.new("1", (8, 8), 1).save(path)
    assert pixel(path) == (255, 255, 255)


def test_palette_keeps_colours(tmp_path):
    path = tmp_path / "palette.png"
    Image.new("RGB", (8, 8), (200, 30, 60)).convert("P").save(path)
    assert Image.open(path).mode == "P"
    assert close_to(pixel(path), (200, 30, 60), tolerance=30)


@pytest.mark.parametrize("suffix", [".png", ".gif"])
def test_palette_transparency_becomes_white(tmp_path, suffix):
    im = Image.new("P", (8, 8), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    path = tmp_path / f"transparent{suffix}"
    im.save(path, transparency=0)
    assert "transparency" in Image.open(path).info
    assert pixel(path) == (255, 255, 255)


def test_rgba_is_composited_on_white_not_black(tmp_path):
    array = np.zeros((8, 8, 4), dtype=np.uint8)
    array[:, :4] = (255, 0, 0, 255)  # opaque red
    array[:, 4:] = (0, 0, 0, 0)  # fully transparent black
    array[0, 0] = (0, 0, 0, 128)  # half transparent black
    path = tmp_path / "alpha.png"
    Image.fromarray(array, "RGBA").save(path)
    assert pixel(path, (1, 1)) == (255, 0, 0)
    assert pixel(path, (6, 6)) == (255, 255, 255)
    assert close_to(pixel(path, (0, 0)), (127, 127, 127), tolerance=2)


def test_grey_alpha_is_composited_on_white(tmp_path):
    path = tmp_path / "la.png"
    Image.new("LA", (8, 8), (0, 0)).save(path)
    assert pixel(path) == (255, 255, 255)


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(path)  # pure red in CMYK
    assert Image.open(path).mode == "CMYK"
    assert close_to(pixel(path), (255, 0, 0), tolerance=10)


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    array = np.array([[0, 32768, 65535, 1000]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(array).save(path)
    assert Image.open(path).mode.startswith("I")
    loaded = load_image(path)
    assert [loaded.getpixel((x, 0))[0] for x in range(4)] == [0, 128, 255, 4]


def test_16_bit_big_endian_and_32_bit_int_and_float():
    values = np.array([[0, 65535]], dtype=np.uint16)
    big_endian = Image.frombytes("I;16B", (2, 1), values.astype(">u2").tobytes())
    assert [to_rgb(big_endian).getpixel((x, 0)) for x in range(2)] == [(0, 0, 0), (255, 255, 255)]
    as_int = Image.fromarray(values.astype(np.int32))
    assert as_int.mode == "I"
    assert to_rgb(as_int).getpixel((1, 0)) == (255, 255, 255)
    as_float = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert [to_rgb(as_float).getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_exif_orientation_is_applied(tmp_path):
    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:, :20] = (255, 0, 0)  # left half red
    array[:, 20:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / "rotated.jpg"
    Image.fromarray(array).save(path, exif=exif, quality=95)

    assert Image.open(path).size == (40, 20)
    assert check_image(path) == ImageInfo(width=20, height=40)
    upright = load_image(path)
    assert upright.size == (20, 40)
    assert close_to(pixel(upright, (10, 5)), (255, 0, 0), tolerance=40)  # left became top
    assert close_to(pixel(upright, (10, 35)), (0, 0, 255), tolerance=40)


def test_animated_gif_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)
    assert Image.open(path).n_frames == 2
    assert close_to(pixel(path), (255, 0, 0), tolerance=5)


def test_load_image_closes_the_file(tmp_path):
    path = tmp_path / "a.png"
    noisy_rgb(0).save(path)
    load_image(path)
    path.unlink()  # would fail on Windows if a handle were left open
    assert not path.exists()


# -- check_image ---------------------------------------------------------------------------------
def reason_for(path) -> str:
    with pytest.raises(ImageError) as caught:
        check_image(path)
    return caught.value.reason


def test_check_returns_size(tmp_path):
    path = tmp_path / "ok.webp"
    noisy_rgb(1, size=24).save(path)
    assert check_image(path) == ImageInfo(24, 24)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.touch()
    assert reason_for(path) == "empty file (0 bytes)"


def test_text_file_renamed_to_jpg(tmp_path):
    path = tmp_path / "fake.jpg"
    path.write_text("definitely not a picture")
    assert reason_for(path) == "not an image"


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_image_is_caught_by_decoding(tmp_path, suffix):
    whole = tmp_path / f"whole{suffix}"
    noisy_rgb(2, size=64).save(whole)
    data = whole.read_bytes()
    truncated = tmp_path / f"truncated{suffix}"
    truncated.write_bytes(data[: len(data) // 2])
    assert reason_for(truncated) == "corrupt or truncated image"
    with pytest.raises(ImageError):
        load_image(truncated)


def test_too_large_by_our_limit(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    noisy_rgb(3, size=32).save(path)
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    assert reason_for(path) == "too large (32×32 pixels, limit 1000)"


def test_too_large_by_pillow_limit(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    noisy_rgb(3, size=32).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    assert reason_for(path).startswith("too large (1024 pixels")


def test_decompression_bomb_header(tmp_path):
    path = png_with_declared_size(tmp_path / "bomb.png", 100_000, 100_000)
    assert reason_for(path).startswith("too large")


def test_missing_file(tmp_path):
    assert reason_for(tmp_path / "nope.png").startswith("cannot be read")


def test_pillow_limit_is_ours():
    assert Image.MAX_IMAGE_PIXELS == images.MAX_PIXELS


# -- names -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [".DS_Store", "._photo.jpg", ".hidden", "Thumbs.db", "thumbs.db",
                                  "desktop.ini", "__MACOSX", "@eaDir"])
def test_hidden_or_system(name):
    assert is_hidden_or_system(Path("/data/cats") / name)


@pytest.mark.parametrize("name", ["cat.jpg", "Thumbs.jpg", "macosx", "eaDir"])
def test_not_hidden(name):
    assert not is_hidden_or_system(Path("/home/me/.local/cats") / name)


def test_extensions_case_insensitive():
    assert images.has_image_extension("A.JPEG") and images.has_image_extension("b.TiF")
    assert not images.has_image_extension("notes.txt")
