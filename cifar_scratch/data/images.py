"""One image file as the model sees it: the rules every photo follows, in training and in ``predict``.

- **Orientation**: the EXIF orientation tag is applied (a phone's portrait photo stands upright).
- **Mode**: to RGB, or to grayscale (L) for a one-channel model. Palette images are expanded, CMYK and
  YCbCr converted, and an alpha channel is dropped (as Keras' ``image_dataset_from_directory`` does);
  16-bit images keep their 8 most significant bits.
- **Size**: with a target size (``data.image_size``, a model's input), the image is scaled (bilinear)
  so that it covers the target, shorter side first, and the centre is cropped: torchvision's
  ``Resize`` + ``CenterCrop``. JPEGs are decoded at a reduced scale where that still covers the target
  (Pillow's ``draft``), so several megapixels cost little.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

from cifar_scratch.errors import DataError

#: The mode names of images whose pixels are gray values.
GRAY_MODES = ("L", "1", "LA", "I;16", "I;16B", "I;16L", "I;16N")


def open_image(data: bytes, where: str, max_pixels: int) -> Image.Image:
    """Encoded bytes -> an opened (lazy) Pillow image; a picture of more than ``max_pixels`` is refused from its header."""
    try:
        image = Image.open(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - Pillow raises what its plugins raise
        raise DataError(f"{where}: not a readable image ({type(exc).__name__}); cannot decode image") from None
    if image.width * image.height > max_pixels:
        raise DataError(f"{where}: a {image.width}x{image.height} image is over {max_pixels:,} pixels (a decompression bomb?)")
    return image


def to_pixels(image: Image.Image, where: str, channels: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """An opened image -> uint8 (H, W, channels) by the module's rules; ``size``: (H, W) target, or None to
    keep the image's own size. Any failure inside Pillow is a DataError naming ``where``."""
    try:
        if size is not None and image.format == "JPEG":
            image.draft("L" if channels == 1 else "RGB", _cover(image.size, size, exif_rotated=_rotated(image)))
        if image.info.get("exif") or image.format == "TIFF":  # only these can hold an orientation; reading EXIF costs
            image = ImageOps.exif_transpose(image)
        if image.mode in ("I", "F"):
            raise DataError(
                f"{where}: {image.mode!r} images (32-bit integer or float pixels) are not supported; use 8 or 16 bits"
            )
        if image.mode.startswith("I;16"):
            image = Image.fromarray((np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8), "L")
        image = image.convert("L" if channels == 1 else "RGB")  # drops alpha; expands palettes; converts CMYK
        if size is not None:
            image = _cover_and_crop(image, size)
        return np.asarray(image, dtype=np.uint8).reshape(image.height, image.width, channels)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises SyntaxError, struct.error, OSError...
        raise DataError(f"{where}: cannot decode image ({type(exc).__name__}: {exc})") from None


def is_gray(image: Image.Image) -> bool:
    return image.mode in GRAY_MODES


def _rotated(image: Image.Image) -> bool:
    """Whether the EXIF orientation turns the image by 90 degrees (width and height trade places)."""
    if not image.info.get("exif"):
        return False
    try:
        return image.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    except Exception:  # noqa: BLE001 - damaged EXIF: exif_transpose will ignore it too
        return False


def _cover(size: tuple[int, int], target: tuple[int, int], exif_rotated: bool) -> tuple[int, int]:
    """The (width, height) a JPEG may be decoded at so that, once upright, it still covers ``target`` (H, W)."""
    height, width = target
    return (height, width) if exif_rotated else (width, height)


def _cover_and_crop(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scale so the image covers (H, W), shorter side first, then crop the centre."""
    height, width = size
    scale = max(height / image.height, width / image.width)
    scaled = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    if scaled != image.size:
        image = image.resize(scaled, Image.Resampling.BILINEAR, reducing_gap=None)
    left, top = (scaled[0] - width) // 2, (scaled[1] - height) // 2
    return image.crop((left, top, left + width, top + height))
