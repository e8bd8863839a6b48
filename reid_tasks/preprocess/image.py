"""Decode and resize one image exactly as the reference transform does, with Pillow itself.

Reference (reid-strong-baseline's test transform, the seed's ``ReID_preprocess.py``)::

    PIL.Image.open(p).convert("RGB") -> Resize((H, W)) bilinear -> ToTensor (/255, CHW)
    -> Normalize(PIXEL_MEAN, PIXEL_STD) -> float32

torchvision's ``Resize`` on a PIL image is ``img.resize((W, H), BILINEAR)``; the same three Pillow calls are
made here, so the uint8 image is bit-identical to the reference for every format Pillow reads (progressive
JPEG, greyscale, CMYK, palette, 16-bit PNG...). Pillow releases the GIL while decoding and resampling, so
threads scale over cores.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np

from ..errors import PreprocessError
from .settings import Settings, normalise_with


class BadImage(Exception):
    """An image that cannot be read or decoded (reason in args[0])."""


def read_bytes(path: str) -> bytes:
    """The file's bytes; BadImage with the OS reason when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise BadImage(f"cannot read: {exc.strerror or exc}") from exc


def _resized_pil(src: Any, height: int, width: int) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(src) as im:
            return im.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    except UnidentifiedImageError:
        raise BadImage("not an image file Pillow can identify") from None
    except Exception as exc:  # Pillow raises many types for broken files
        raise BadImage(f"{type(exc).__name__}: {exc}") from exc


def decode_resize_into(data: bytes, height: int, width: int, out: np.ndarray) -> None:
    """Decode the encoded image ``data`` and write it resized (H, W, 3 uint8 RGB) into ``out``."""
    if not data:
        raise BadImage("empty file")
    out[...] = np.asarray(_resized_pil(io.BytesIO(data), height, width))


def load_resized(path: str | os.PathLike[str], height: int, width: int) -> np.ndarray:
    """Decoded, RGB, resized uint8 HxWx3 image (the cache's stored form). PreprocessError if unreadable."""
    out = np.empty((height, width, 3), dtype=np.uint8)
    try:
        decode_resize_into(read_bytes(os.fspath(path)), height, width, out)
    except BadImage as exc:
        raise PreprocessError(f"{path}: {exc.args[0]}") from None
    return out


def preprocess_image(path: str | os.PathLike[str], cfg: Any) -> np.ndarray:
    """The seed's test transform of one image: float32 (3, H, W), H, W = cfg.INPUT.SIZE_TEST."""
    s = Settings.from_cfg(cfg)
    return normalise_with(load_resized(path, s.height, s.width), *s.scale_offset())


def reference_resized(path: str | os.PathLike[str], height: int, width: int) -> np.ndarray:
    """The reference's uint8 image, written out call by call as torchvision does (for tests and benchmarks)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((width, height), Image.BILINEAR))


def reference_preprocess(path: str | os.PathLike[str], cfg: Any) -> np.ndarray:
    """The reference itself (PIL + numpy, as torchvision's Resize/ToTensor/Normalize); for tests and checks."""
    s = Settings.from_cfg(cfg)
    x = reference_resized(path, s.height, s.width).astype(np.float32).transpose(2, 0, 1) / np.float32(255.0)
    mean = np.array(s.mean, dtype=np.float32)[:, None, None]
    std = np.array(s.std, dtype=np.float32)[:, None, None]
    return ((x - mean) / std).astype(np.float32)
