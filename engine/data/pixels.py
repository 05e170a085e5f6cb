"""What an image's pixels say on their own: whether it is nearly blank, dark, bright, blurred, tiny or oddly
shaped (the measures cleanvision uses), and a small band-pass thumbnail that tells a copy from a look-alike.

A near-copy (cropped a few percent, resized, re-encoded) of another photo keeps its fine detail where the
other photo has it; a look-alike (another shirt, the next cell of a module) does not. Pooled backbone
features cannot tell the two apart (measured: planted copies of Fashion-MNIST test photos sat at cosine
0.70-0.99 from their source, among hundreds of look-alikes as close), so a pair the features bring together
is confirmed here: the best normalised correlation of the two band-passed thumbnails over small crops of
either (engine.audit.duplicates). numpy and Pillow only.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from engine.core.control import RunControl
from engine.core.progress import Progress
from engine.data import images

SIDE = 48                        # thumbnail side (pixels) that pairs are compared at
CROPS = (1.0, 1.05, 1.10)        # per axis: the other image may show up to ~10 % more than this one
BAND = (0.7, 3.0)                # difference of Gaussians (sigmas, in thumbnail pixels): fine detail, no noise
MEASURE_SIDE = 256               # longest side the brightness, contrast and blur measures look at
GREY_SIDE = 64                   # the grey image kept per image (4 KB), its thumbnails drawn from it


@dataclass
class PixelSignature:
    """What one image's pixels are judged by, and `grey`: the whole image in grey at GREY_SIDE x GREY_SIDE
    (uint8), which its thumbnails are drawn from (copy_similarities)."""

    size: tuple[int, int]
    dark: float          # 99th percentile of brightness, 0..1: low when nothing in the image is bright
    light: float         # 1st percentile of brightness, 0..1: high when nothing is dark
    spread: float        # standard deviation of brightness, 0..1: near 0 for a blank image
    sharpness: float     # variance of the Laplacian of the grey image (cleanvision's blur measure)
    grey: np.ndarray


def signature(path: str) -> PixelSignature:
    """The signature of the image at `path`; ImageError when it cannot be read."""
    image = images.to_rgb(images.load_image(path)).convert("L")
    size = image.size
    scale = MEASURE_SIDE / max(size)
    measured = image.resize((max(1, round(size[0] * scale)), max(1, round(size[1] * scale))), Image.BILINEAR,
                            reducing_gap=3.0) if scale < 1 else image
    grey = np.asarray(measured, np.float32) / 255.0
    low, high = np.percentile(grey, [1, 99])
    small = np.asarray(image.resize((GREY_SIDE, GREY_SIDE), Image.BILINEAR, reducing_gap=3.0), np.uint8)
    return PixelSignature(size, float(high), float(low), float(grey.std()), laplacian_variance(grey), small)


def laplacian_variance(grey: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian (grey values 0..255): small when the image is blurred."""
    if min(grey.shape) < 3:
        return 0.0
    g = grey * 255.0
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]
    return float(lap.var())


def band_pass(image: Image.Image, width: int, height: int) -> np.ndarray:
    """The grey image at width x height, fine detail kept and noise and shading removed."""
    small = image.resize((width, height), Image.BILINEAR, reducing_gap=3.0)
    fine, coarse = (np.asarray(small.filter(ImageFilter.GaussianBlur(s)), np.float32) for s in BAND)
    return fine - coarse


def signatures(paths: list[str], progress: Progress, control: RunControl,
               workers: int = 4) -> list[PixelSignature | None]:
    """Every image's signature (None when it cannot be read), in a thread pool (Pillow releases the GIL);
    reports progress("pixels", done, total)."""
    results: list[PixelSignature | None] = [None] * len(paths)
    progress("pixels", 0, len(paths))

    def one(index: int) -> None:
        try:
            results[index] = signature(paths[index])
        except (images.ImageError, OSError):
            results[index] = None

    chunk = 64
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pixels") as pool:
        for start in range(0, len(paths), chunk):
            control.checkpoint()
            list(pool.map(one, range(start, min(start + chunk, len(paths)))))
            progress("pixels", min(start + chunk, len(paths)), len(paths))
    return results


def copy_similarities(greys: list[np.ndarray | None], pairs: np.ndarray) -> np.ndarray:
    """Per pair (rows of sample indices into `greys`, the signatures' grey images): the best normalised
    correlation of one image's band-passed thumbnail with any window of the other's, stretched by up to
    10 % either way, both ways round: about 1 for a crop, resize or re-encode of the same photo (planted
    copies of Fashion-MNIST photos: 0.86-1.0), 0 where either image is missing. Each image's windows are
    drawn once and met by all its partners in one matrix product."""
    scores = np.zeros(len(pairs), np.float32)
    partners: dict[int, list[tuple[int, int]]] = {}
    for row, (a, b) in enumerate(pairs):
        if greys[a] is not None and greys[b] is not None:
            partners.setdefault(int(b), []).append((row, int(a)))
            partners.setdefault(int(a), []).append((row, int(b)))
    units = {i: window_rows(band_pass(Image.fromarray(greys[i]), SIDE, SIDE), (SIDE, SIDE))[0]
             for i in partners}
    for target, items in partners.items():
        windows = window_matrix(greys[target])
        best = (windows @ np.stack([units[source] for _, source in items]).T).max(0)
        np.maximum.at(scores, [row for row, _ in items], best)
    return scores


def window_matrix(grey: np.ndarray) -> np.ndarray:
    """[W, SIDE*SIDE]: every SIDE x SIDE window of the image's thumbnails stretched by CROPS, each centred and
    scaled to length 1."""
    image = Image.fromarray(grey)
    return np.concatenate([window_rows(band_pass(image, round(SIDE * rx), round(SIDE * ry)), (SIDE, SIDE))
                           for rx in CROPS for ry in CROPS])


def window_rows(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from numpy.lib.stride_tricks import sliding_window_view
    rows = sliding_window_view(array, shape).reshape(-1, shape[0] * shape[1])
    rows = rows - rows.mean(1, keepdims=True)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-6)


# -- odd images: the checks cleanvision makes, with its kind of limits ------------------------------------
DARK_LIMIT = 0.15        # nothing brighter than 15 % grey
LIGHT_LIMIT = 0.90       # nothing darker than 90 % grey
BLANK_LIMIT = 0.02       # brightness varies by under 2 % of its range
TINY_SIDE = 32           # pixels: a side this short holds little for a 224-pixel model, when it is also
TINY_SHARE = 0.5         # under half the dataset's typical shorter side (a set of 28-pixel scans is not odd)
ASPECT_LIMIT = 4.0       # longer side over shorter side: a centre crop keeps a quarter of it at most
BLUR_SHARE = 0.05        # sharpness under 5 % of the dataset's median (the set's own photos are the scale)


def odd_reasons(signatures_: list[PixelSignature | None]) -> dict[int, str]:
    """index -> why the image is odd, for the images that are: one reason each, the most telling first."""
    sharp = [s.sharpness for s in signatures_ if s is not None]
    blur_limit = BLUR_SHARE * float(np.median(sharp)) if sharp else 0.0
    sides = [min(s.size) for s in signatures_ if s is not None]
    tiny_limit = min(TINY_SIDE, TINY_SHARE * float(np.median(sides))) if sides else TINY_SIDE
    reasons = {}
    for index, s in enumerate(signatures_):
        if s is None:
            continue
        width, height = s.size
        if s.spread < BLANK_LIMIT:
            reasons[index] = f"nearly blank (brightness varies by {s.spread:.1%})"
        elif s.dark < DARK_LIMIT:
            reasons[index] = f"very dark (its brightest parts are {s.dark:.0%} grey)"
        elif s.light > LIGHT_LIMIT:
            reasons[index] = f"very bright (its darkest parts are {s.light:.0%} grey)"
        elif min(width, height) < tiny_limit:
            reasons[index] = f"tiny ({width}×{height} pixels)"
        elif max(width, height) / max(min(width, height), 1) > ASPECT_LIMIT:
            reasons[index] = f"extreme aspect ratio ({width}×{height} pixels)"
        elif s.sharpness < blur_limit:
            reasons[index] = "blurred (far less sharp than the other images)"
    return reasons
