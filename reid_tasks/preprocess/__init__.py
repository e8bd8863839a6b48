"""Preprocessing: the seed's test transform with Pillow, a compact tensor cache, the seed's layout.

One module per concern:

* :mod:`.settings` -- input size, mean/std and the one place they become ``x * scale + offset``;
* :mod:`.image` -- decode + resize one image with Pillow (bit-identical to the reference transform);
* :mod:`.workers` -- many images in parallel into rows of one uint8 array file;
* :mod:`.cache` -- :func:`preprocess_dataset` and the read side :class:`TensorCache`;
* :mod:`.seed_layout` -- the seed's per-image float32 ``.bin`` + info layout, written once per cache;
* :mod:`.cli` -- ``reid-validate preprocess``.
"""

from __future__ import annotations

from .cache import CacheItem, TensorCache, preprocess_dataset
from .cli import add_preprocess_parser, cli_preprocess, resolve_source
from .image import load_resized, preprocess_image, reference_preprocess, reference_resized
from .seed_layout import SeedLayout, shared_layout_dir, write_seed_layout
from .settings import CACHE_VERSION, Settings, normalise, scale_offset

__all__ = [
    "CACHE_VERSION",
    "CacheItem",
    "SeedLayout",
    "Settings",
    "TensorCache",
    "add_preprocess_parser",
    "cli_preprocess",
    "load_resized",
    "normalise",
    "preprocess_dataset",
    "preprocess_image",
    "reference_preprocess",
    "reference_resized",
    "resolve_source",
    "scale_offset",
    "shared_layout_dir",
    "write_seed_layout",
]
