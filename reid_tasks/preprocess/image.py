"""Decode and resize one image exactly as the reference transform does, with Pillow itself.

Reference (reid-strong-baseline's test transform, the seed's ``ReID_preprocess.py``)::

    PIL.Image.open(p).convert("RGB") -> Resize((H, W)) bilinear -> ToTensor (/255, CHW)
    -> Normalize(PIXEL_MEAN, PIXEL_STD) -> float32

torchvision's ``Resize`` on a PIL image is ``img.resize((W, H), BILINEAR)``. Decoding is Pillow's own
``open(...).convert("RGB")``, so every format Pillow reads (progressive JPEG, greyscale, CMYK, palette,
16-bit PNG...) gives the reference's pixels; resizing is Pillow's ``resize`` too, except in the one case
every Market-1501 crop hits, an exact 2x enlargement (128x64 -> 256x128), where Pillow's resampler costs
three times the decode. There PIL's bilinear filter has the weights 1/4 and 3/4 (the border pixel is
copied) and rounds to whole grey levels after each pass: out = (a + 3b + 2) >> 2 horizontally, then the
same vertically. Two one-axis ``cv2.resize(INTER_LINEAR)`` passes compute exactly that (OpenCV's 11-bit
fixed point holds 1/4 and 3/4 exactly and rounds half up once per pass); tests/core/test_preprocess.py
checks it on every one of the 65,536 neighbour pairs in both directions and on whole images. Pillow and
OpenCV release the GIL, so threads scale over cores.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np

from ..errors import PreprocessError
from .settings import Settings, normalise_with

#: take the OpenCV path for exact 2x enlargements (bit-identical either way; benchmarks turn it off to compare)
FAST_2X = True


class BadImage(Exception):
    """An image that cannot be read or decoded (reason in args[0])."""


def read_bytes(path: str) -> bytes:
    """The file's bytes; BadImage with the OS reason when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise BadImage(f"cannot read: {exc.strerror or exc}") from exc


def upscale2x_into(img: np.ndarray, out: np.ndarray) -> None:
    """PIL's bilinear 2x enlargement of HxWx3 uint8 ``img`` into ``out`` (2H x 2W x 3), bit for bit."""
    import cv2

    h, w = img.shape[:2]
    wide = cv2.resize(img, (2 * w, h), interpolation=cv2.INTER_LINEAR)  # PIL's horizontal pass, rounded
    cv2.resize(wide, (2 * w, 2 * h), dst=out, interpolation=cv2.INTER_LINEAR)  # then its vertical pass


def _open(data: bytes) -> Any:
    """``PIL.Image.open`` of the bytes; JPEGs are opened with the JPEG plug-in named (the same plug-in
    ``open`` would pick after asking the others, at a third of the cost for a 5 KB crop)."""
    from PIL import Image, UnidentifiedImageError

    if data[:3] == b"\xff\xd8\xff":
        try:
            return Image.open(io.BytesIO(data), formats=("JPEG",))
        except UnidentifiedImageError:
            pass
    return Image.open(io.BytesIO(data))


def decode_resize_into(data: bytes, height: int, width: int, out: np.ndarray) -> None:
    """Decode the encoded image ``data`` and write it resized (H, W, 3 uint8 RGB) into ``out``."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise BadImage("empty file")
    try:
        with _open(data) as im:
            if im.mode == "RGB":  # convert("RGB") would return a copy of the same pixels
                im.load()
                rgb = im
            else:
                rgb = im.convert("RGB")
            if FAST_2X and rgb.size == (width // 2, height // 2) and width % 2 == 0 and height % 2 == 0:
                upscale2x_into(np.asarray(rgb), out)
            else:
                out[...] = np.asarray(rgb.resize((width, height), Image.Resampling.BILINEAR))
    except UnidentifiedImageError:
        raise BadImage("not an image file Pillow can identify") from None
    except Exception as exc:  # Pillow raises many types for broken files
        raise BadImage(f"{type(exc).__name__}: {exc}") from exc


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
