"""``reid-validate preprocess SRC DST``: a Market-1501 root or one image folder -> tensor cache (+ seed layout)."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from ..errors import DatasetError
from .cache import CacheItem, preprocess_dataset
from .settings import MANIFEST_NAME


def _folder_items(folder: Path) -> list[CacheItem]:
    from ..datasets import scan_folder

    split = "gallery" if folder.name == "bounding_box_test" else "query"
    return [CacheItem(path, pid, camid, split) for path, pid, camid in scan_folder(folder)]


def resolve_source(src: str | os.PathLike[str]) -> Any:
    """A Market-1501 root (-> Market1501) or a single folder of Market-named *.jpg (-> list of CacheItem)."""
    from ..datasets import Market1501

    path = Path(src).expanduser().absolute()
    if not path.is_dir():
        raise DatasetError(f"source folder does not exist: {path}")
    try:
        return Market1501(path)
    except DatasetError:
        if (path / "query").exists() or (path / "bounding_box_test").exists():
            raise
        if not any(e.name.endswith(".jpg") for e in os.scandir(path)):
            raise
    return _folder_items(path)


def add_preprocess_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``preprocess SRC DST [--config-file X] [KEY VALUE ...] [--workers N] [--skip-bad] [--seed-layout DIR]``."""
    p = subparsers.add_parser(
        "preprocess",
        help="preprocess Market-1501 (or one image folder) into a tensor cache",
        description=(
            "Decode, resize (bilinear, PIL-equivalent) and store images at model size as one uint8 array + "
            "manifest; optionally also write the seed's float32 <stem>.bin files and info file."
        ),
    )
    p.add_argument("src", help="Market-1501 root, or a folder of Market-named *.jpg")
    p.add_argument("dst", help="cache folder to create (reused when inputs and settings are unchanged)")
    p.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides, as the seed's command line")
    p.add_argument("--config-file", "--config_file", dest="config_file", default=None, help="yacs yml")
    p.add_argument("--workers", type=int, default=None, help="parallel workers (default: VALIDATION.WORKERS or cores)")
    p.add_argument("--skip-bad", action="store_true", help="leave unreadable images out and record them")
    p.add_argument("--seed-layout", default=None, metavar="DIR", help="also write <stem>.bin files + prep_bin.info")
    p.set_defaults(func=cli_preprocess)
    return p


def cli_preprocess(args: argparse.Namespace) -> int:
    """Handler of ``reid-validate preprocess``."""
    from ..config import load_config

    cfg = load_config(args.config_file, list(args.opts or ()))
    source = resolve_source(args.src)
    workers = args.workers or int(cfg.VALIDATION.WORKERS) or None
    t0 = time.perf_counter()
    cache = preprocess_dataset(source, args.dst, cfg, workers=workers, skip_bad=args.skip_bad)
    dt = time.perf_counter() - t0
    state = "reused" if cache.reused else f"built in {dt:.2f} s ({len(cache) / max(dt, 1e-9):.0f} img/s)"
    print(
        f"cache {cache.dir}: {len(cache)} images ({cache.num_query} query, {len(cache) - cache.num_query} gallery), "
        f"{cache.height}x{cache.width}, {state}, fingerprint {cache.fingerprint[:12]}"
    )
    if cache.bad:
        print(f"skipped {len(cache.bad)} unreadable image(s) (recorded in {cache.dir / MANIFEST_NAME}):")
        for b in cache.bad:
            print(f"  {b['path']}: {b['reason']}")
    if args.seed_layout:
        layout = cache.write_seed_layout(args.seed_layout, workers=workers)
        print(f"seed layout: {len(layout.stems)} files in {layout.bin_dir}, info file {layout.info_path}")
    return 0
