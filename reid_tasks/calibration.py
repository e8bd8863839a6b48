"""Which images calibrate int8, and their fingerprint (no evaluated query image ever calibrates).

VALIDATION.CALIBRATION.NUM_IMAGES images, evenly spaced by file name, over bounding_box_train when the dataset
has it, else over the gallery: then those gallery images are a hold-out the parity sample excludes
(:func:`held_out_rows`). Calibrating on what is evaluated would flatter int8.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .utils import file_digest


def choose(cfg: Any, dataset: Any) -> tuple[str, list[Any]]:
    """(split, images) that calibrate int8: ``train`` or ``gallery-holdout`` and the chosen dataset items."""
    from .targets.parity import sample_indices

    split, pool = ("train", dataset.train) if dataset.train else ("gallery-holdout", dataset.gallery)
    n = min(int(cfg.VALIDATION.CALIBRATION.NUM_IMAGES), len(pool))
    if n < 1:
        raise ConfigError(
            f"VALIDATION.CALIBRATION.NUM_IMAGES must be >= 1, got {cfg.VALIDATION.CALIBRATION.NUM_IMAGES}"
        )
    return split, [pool[int(i)] for i in sample_indices(0, len(pool), n)]


def fingerprint(split: str, items: Sequence[Any]) -> str:
    """sha256 over the calibration images' split, names, pid/camid and bytes (order included)."""
    h = hashlib.sha256()
    for it in items:
        h.update(f"{split}/{Path(it.path).name} {it.pid} {it.camid} {file_digest(it.path)}\n".encode())
    return h.hexdigest()


def calibration_set(cfg: Any, dataset: Any) -> Any:
    """The int8 calibration images of ``dataset`` (a Market1501), preprocessed, with their record (split,
    selection, file names, fingerprint): a ``targets.build.CalibrationSet``."""
    import numpy as np

    from .preprocess import preprocess_image
    from .targets.build import CalibrationSet

    split, items = choose(cfg, dataset)
    record = {
        "source": "dataset",
        "split": split,
        "selection": "evenly spaced by file name",
        "num_images": len(items),
        "images": [Path(it.path).name for it in items],
        "fingerprint": fingerprint(split, items),
    }
    return CalibrationSet(np.stack([preprocess_image(it.path, cfg) for it in items]), record)


def held_out_rows(cfg: Any, dataset: Any, cache: Any) -> list[int]:
    """Rows of ``cache`` (a TensorCache of ``dataset``) that calibrate int8 and so stay out of the parity
    sample: gallery rows of the hold-out; none when int8 is calibrated on bounding_box_train."""
    split, items = choose(cfg, dataset)
    if split == "train":
        return []
    paths = {str(Path(it.path).resolve()) for it in items}
    return [i for i, it in enumerate(cache.items) if i >= cache.num_query and str(Path(it.path).resolve()) in paths]
