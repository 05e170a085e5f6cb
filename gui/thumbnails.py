"""Pictures of the user's images for the window, decoded exactly as training decodes them (EXIF rotation,
any colour mode). Built on worker threads: a QImage may be made off the GUI thread, a QPixmap may not."""
from __future__ import annotations

from PySide6.QtGui import QImage


def rgb_qimage(image) -> QImage:
    """A QImage owning a copy of an RGB picture: a Pillow image, or a C-contiguous H×W×3 uint8 array
    (numpy is not imported here: the window imports this module before its first paint)."""
    if hasattr(image, "convert"):
        image = image.convert("RGB")
        (width, height), pixels = image.size, image.tobytes()
    else:
        (height, width), pixels = image.shape[:2], image.tobytes()
    return QImage(pixels, width, height, 3 * width, QImage.Format.Format_RGB888).copy()


def thumbnail(path: str, size: int) -> QImage:
    """The image fitted in a `size` square (small images grow to it); an empty QImage when the file cannot
    be read, e.g. changed or deleted since it was scanned: a blank tile is enough, the scan reported it."""
    from PIL import ImageOps

    from engine.data.images import ImageError, load_image
    try:
        image = load_image(path)
    except (ImageError, OSError):
        return QImage()
    return rgb_qimage(ImageOps.contain(image, (size, size)))
