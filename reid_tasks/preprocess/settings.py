"""The preprocessing settings and the one place that turns PIXEL_MEAN / PIXEL_STD into numbers.

``(x / 255 - mean) / std`` is computed everywhere (single images, cache batches, the seed's ``.bin`` files) as
``x * scale + offset`` with the per-channel float32 ``scale = 1 / (255 * std)`` and ``offset = -mean / std``
of :func:`scale_offset`, so all three are bit-identical to each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import PreprocessError

CACHE_VERSION = 2  # 2: Pillow decode + resize (bit-identical to the reference), was OpenCV within 1 grey level
ARRAY_NAME = "images.u8.npy"
MANIFEST_NAME = "manifest.json"
INTERPOLATION = "bilinear, bit-identical to Pillow Image.resize (torchvision Resize on a PIL image)"
CHUNK = 32  # images per parallel task


def scale_offset(mean: Sequence[float], std: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel float32 (scale, offset) with (x / 255 - mean) / std == x * scale + offset."""
    scale = np.array([1.0 / (255.0 * s) for s in std], dtype=np.float32)
    offset = np.array([-m / s for m, s in zip(mean, std, strict=True)], dtype=np.float32)
    return scale, offset


def normalise_with(u8: np.ndarray, scale: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """uint8 NHWC (or HWC) RGB -> float32 NCHW (or CHW) as ``x * scale + offset`` per channel."""
    single = u8.ndim == 3
    x = u8[None] if single else u8
    n, h, w, _ = x.shape
    out = np.empty((n, 3, h, w), dtype=np.float32)
    for c in range(3):
        plane = np.ascontiguousarray(x[..., c])
        np.multiply(plane, scale[c], out=out[:, c], casting="unsafe")
        out[:, c] += offset[c]
    return out[0] if single else out


def normalise(u8: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 NHWC (or HWC) RGB -> float32 NCHW (or CHW): (x / 255 - mean) / std."""
    return normalise_with(u8, *scale_offset(mean, std))


@dataclass(frozen=True)
class Settings:
    """Model input size and normalisation, from ``INPUT.*`` of a config or from a cache manifest."""

    height: int
    width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_cfg(cls, cfg: Any) -> Settings:
        return cls.make(cfg.INPUT.SIZE_TEST, cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD)

    @classmethod
    def from_manifest(cls, settings: dict[str, Any]) -> Settings:
        return cls.make(settings["size"], settings["mean"], settings["std"])

    @classmethod
    def make(cls, size: Sequence[Any], mean: Sequence[Any], std: Sequence[Any]) -> Settings:
        h, w = (int(v) for v in size)
        m = tuple(float(v) for v in mean)
        s = tuple(float(v) for v in std)
        if len(m) != 3 or len(s) != 3 or min(s) <= 0 or h <= 0 or w <= 0:
            raise PreprocessError(f"bad preprocessing settings: size {[h, w]}, mean {m}, std {s}")
        return cls(h, w, m, s)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": [self.height, self.width],
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": INTERPOLATION,
            "color": "RGB",
            "layout": "NHWC",
            "dtype": "uint8",
        }

    def scale_offset(self) -> tuple[np.ndarray, np.ndarray]:
        return scale_offset(self.mean, self.std)
