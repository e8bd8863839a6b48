"""Embedded demo data: a synthetic Market-1501 and a deterministic checkpoint in the released format."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .utils import log

DEMO_NUM_IDS = 24
DEMO_SEED = 0
CHECKPOINT_NAME = "demo_resnet50_bnneck.pth"


@dataclass(frozen=True)
class DemoData:
    """Paths of the demo dataset (Market-1501 layout) and checkpoint."""

    dataset_root: str
    checkpoint: str


def demo_paths(directory: str | os.PathLike[str]) -> DemoData:
    """Where :func:`ensure_demo_data` puts the demo dataset and checkpoint under ``directory`` (nothing written)."""
    directory = Path(directory).expanduser().resolve()
    return DemoData(dataset_root=str(directory / "market1501"), checkpoint=str(directory / CHECKPOINT_NAME))


def is_demo_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a demo checkpoint (written by ``ensure_demo_data`` / ``reid-validate sample-data``)."""
    return Path(path).name == CHECKPOINT_NAME


def is_demo_dataset(root: str | os.PathLike[str]) -> bool:
    """Whether ``root`` holds a synthetic Market-1501 (the generator leaves ``.synthetic.json`` in it)."""
    from .datasets import DATASET_DIR_NAMES

    root = Path(root)
    return any((d / ".synthetic.json").is_file() for d in [root, *(root / n for n in DATASET_DIR_NAMES)])


def ensure_demo_data(directory: str | os.PathLike[str], num_ids: int = DEMO_NUM_IDS, seed: int = DEMO_SEED) -> DemoData:
    """Create (or reuse) the synthetic Market-1501 and the demo checkpoint under ``directory``."""
    import numpy as np
    import torch

    from .config import load_config
    from .model import write_demo_checkpoint
    from .preprocess import preprocess_image
    from .synthetic import make_synthetic_market1501

    directory = Path(directory).expanduser().resolve()
    paths = demo_paths(directory)
    info = make_synthetic_market1501(paths.dataset_root, num_ids=num_ids, seed=seed, with_train=True)
    ckpt = Path(paths.checkpoint)
    if not ckpt.is_file():
        cfg = load_config()
        train = sorted((Path(info.root) / "bounding_box_train").glob("*.jpg"))
        images = torch.from_numpy(np.stack([preprocess_image(p, cfg) for p in train]))
        write_demo_checkpoint(ckpt, calibration_images=images, seed=seed)
        log.info("demo: wrote checkpoint %s (BN statistics from %d training images)", ckpt, len(train))
    return paths
