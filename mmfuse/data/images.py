"""Decoding real images safely: a pixel limit, EXIF orientation, every valid PIL mode to RGB, resize + centre crop.

The output is what :class:`~mmfuse.types.Batch` carries: float (3, H, W) in [0, 1]. Normalisation (mean/std) stays
inside the vision encoder, and the size comes from the encoder's ``preprocess_cfg["size"]`` (see
:func:`image_size_from`), never from a constant here.

Mode conversion (valid modes are converted, never rejected):
    * ``RGB``: kept. ``L``, ``1``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``: PIL's own ``convert("RGB")``.
    * Transparency (``RGBA``, ``LA``, ``PA``, premultiplied ``RGBa``/``La``, or a ``P``/``L``/``RGB`` image with a
      transparency key): **composited on white**. Dropping alpha instead would expose whatever colour the encoder
      left under fully transparent pixels (often black, sometimes noise); logos, memes and scanned documents are
      authored to be seen on a light background.
    * ``I;16`` (and ``I;16B``/``I;16L``): 16-bit, scaled by 255/65535. ``I`` (32-bit int, also how older PIL opens
      16-bit PNGs): kept when its maximum is <= 255, scaled by 255/65535 when <= 65535, else min-max stretched.
      ``F`` (float): values in [0, 1] are scaled by 255, any other range is min-max stretched. NaN counts as 0.
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "BadImageError",
    "open_image",
    "check_image",
    "decode_image",
    "load_image",
    "to_rgb",
    "resize_center_crop",
    "to_tensor",
    "image_size_from",
]

DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own warning threshold: about 0.25 GB as 24-bit RGB
_ORIENTATION = 0x0112  # EXIF tag
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
# What PIL raises on corrupt or truncated data, depending on the format plugin.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)


class BadImageError(ValueError):
    """An image file that cannot be used; the message names the file.

    Args:
        message: what is wrong, naming the file (and the limit, for ``too_many_pixels``).
        reason: ``missing_file``, ``too_many_pixels`` or ``corrupt_image``.
    """

    def __init__(self, message: str, reason: str = "corrupt_image") -> None:
        super().__init__(message)
        self.reason = reason


def open_image(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open ``path`` lazily (only the header is read) and refuse it before decoding if it has too many pixels.

    Args:
        path: the image file.
        max_pixels: most pixels (width * height) allowed; None = no limit of ours. PIL's own guard
            (``PIL.Image.MAX_IMAGE_PIXELS``, an error at twice that) still applies; raise it too for larger limits.

    Raises:
        BadImageError: ``missing_file``, ``too_many_pixels`` or ``corrupt_image`` (not an image at all).
    """
    try:
        with warnings.catch_warnings():  # our own limit decides; PIL's warning would only repeat it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except FileNotFoundError as err:
        raise BadImageError(f"{path}: no such file", "missing_file") from err
    except Image.DecompressionBombError as err:
        raise BadImageError(f"{path}: over PIL's pixel limit ({err})", "too_many_pixels") from err
    except _DECODE_ERRORS as err:
        raise BadImageError(f"{path}: not a readable image ({err})") from err
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        image.close()
        raise BadImageError(
            f"{path}: {width}x{height} = {width * height} pixels is over the limit of {max_pixels} pixels "
            "(a decompression-bomb guard; raise data.source.max_pixels to accept it)",
            "too_many_pixels",
        )
    return image


def check_image(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
    """A cheap check that ``path`` is a usable image: header, pixel limit, and the data decodes.

    JPEGs are decoded at 1/8 scale (``draft``), which still reads every byte and so catches truncation; PNGs are
    ``verify()``-ed (every chunk's CRC, without decompressing); other formats are decoded in full.

    Raises:
        BadImageError: as :func:`open_image`, or ``corrupt_image`` when the data does not decode.
    """
    with open_image(path, max_pixels) as image:
        try:
            if image.format == "PNG":
                image.verify()
            else:
                if image.format == "JPEG":
                    image.draft(None, (1, 1))
                image.load()
        except _DECODE_ERRORS as err:
            raise BadImageError(f"{path}: the image data does not decode ({err})") from err


def decode_image(
    path: str | Path, image_size: int | None, max_pixels: int | None = DEFAULT_MAX_PIXELS, draft_side: int | None = None
) -> Image.Image:
    """Decode ``path`` to an upright RGB image, resized and centre-cropped to ``image_size`` (None = not resized).

    A JPEG is decoded directly at the smallest 1/2^k scale that keeps both sides >= ``image_size`` (``draft``),
    which is exact for the resize that follows and much faster for large photos. Without ``image_size``,
    ``draft_side`` does the same for a transform that resizes the image itself (None = native size).

    Raises:
        BadImageError: ``missing_file``, ``too_many_pixels`` or ``corrupt_image``, naming the file.
    """
    side = image_size or draft_side
    with open_image(path, max_pixels) as image:
        try:
            if side is not None and image.format == "JPEG":
                image.draft(None, (side, side))
            image.load()
            if image.getexif().get(_ORIENTATION, 1) != 1:
                image = ImageOps.exif_transpose(image)
            rgb = to_rgb(image)
        except _DECODE_ERRORS as err:
            raise BadImageError(f"{path}: the image data does not decode ({err})") from err
    return rgb if image_size is None else resize_center_crop(rgb, image_size)


def load_image(path: str | Path, image_size: int, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Tensor:
    """:func:`decode_image` as a tensor.

    Returns:
        (3, image_size, image_size) float32 in [0, 1].
    """
    return to_tensor(decode_image(path, image_size, max_pixels))


def _to_8bit(image: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float single-channel image as 8-bit ``L`` (rules in the module docstring)."""
    values = np.nan_to_num(np.asarray(image).astype(np.float64))  # (H, W)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if image.mode == "F" and low >= 0.0 and high <= 1.0:
        scaled = values * 255.0
    elif image.mode != "F" and (image.mode.startswith("I;16") or 0.0 <= low and high <= 65535.0):
        scaled = values if image.mode == "I" and high <= 255.0 else values * (255.0 / 65535.0)
    else:  # a float image in another range, or a 32-bit int image beyond 16 bits: stretch
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Any valid PIL mode as RGB (rules in the module docstring; transparency is composited on ``background``)."""
    if image.mode.startswith("I") or image.mode == "F":
        image = _to_8bit(image)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, background)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image if image.mode == "RGB" else image.convert("RGB")


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Scale so that the shorter side is ``size`` (bicubic, antialiased), then keep the central ``size x size``."""
    if image.size == (size, size):
        return image
    return ImageOps.fit(image, (size, size), method=Image.Resampling.BICUBIC)


def to_tensor(image: Image.Image) -> Tensor:
    """An RGB PIL image as a tensor, with the same arithmetic as :class:`~mmfuse.data.collate.ImageTextCollator`.

    Returns:
        (3, H, W) float32 in [0, 1].
    """
    pixels = np.array(image if image.mode == "RGB" else image.convert("RGB"))  # (H, W, 3) uint8, a writable copy
    chw = torch.from_numpy(pixels).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W), still HWC in memory
    # copied into the CHW layout: a plain .float() would keep the permuted strides, which convolutions follow
    return chw.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)


def image_size_from(preprocess_cfg: Mapping[str, Any]) -> int:
    """The square input side from a vision encoder's ``preprocess_cfg`` (``size``: int, or timm's (C, H, W)).

    Example:
        >>> image_size_from({"mean": (0.5,) * 3, "std": (0.5,) * 3, "size": 224})
        224
        >>> image_size_from({"input_size": (3, 256, 256)})
        256
    """
    size = preprocess_cfg.get("size", preprocess_cfg.get("input_size"))
    if isinstance(size, int):
        return size
    if isinstance(size, (tuple, list)) and len(size) >= 2 and size[-1] == size[-2]:
        return int(size[-1])
    raise ValueError(f"preprocess_cfg size {size!r}: expected an int or a square (C, H, W) / (H, W)")
