"""Preprocessing throughput: the seed's ReID_preprocess.py style vs reid_tasks.preprocess, in one run.

Baseline (as the seed): one process, per image PIL open -> convert('RGB') -> resize bilinear ->
numpy /255 -> normalise -> float32 CHW ``tofile(<stem>.bin)``.
Ours: ``preprocess_dataset`` into the uint8 tensor cache with one worker per core; the seed-layout
write (``TensorCache.write_seed_layout``) is timed separately.

    .venv/bin/python benchmarks/bench_preprocess.py [--n 2000] [--src DIR] [--workers N] [--backend thread|process|both]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reid_tasks.config import load_config
from reid_tasks.datasets import make_synthetic_market1501, parse_market_name
from reid_tasks.preprocess import CacheItem, preprocess_dataset


def seed_style(paths: list[str], out_dir: Path, h: int, w: int, mean, std) -> None:
    """The seed's per-image loop (PIL + numpy + one .bin file per image)."""
    from PIL import Image

    mean = np.array(mean, dtype=np.float32)[:, None, None]
    std = np.array(std, dtype=np.float32)[:, None, None]
    out_dir.mkdir(parents=True, exist_ok=True)
    for p in paths:
        img = Image.open(p).convert("RGB").resize((w, h), Image.BILINEAR)
        x = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
        x = ((x - mean) / std).astype(np.float32)
        x.tofile(out_dir / (Path(p).stem + ".bin"))


def make_images(root: Path, n: int) -> list[str]:
    per_id = 8  # 1 query + 7 gallery images per identity
    info = make_synthetic_market1501(
        root,
        num_ids=max(1, (n + per_id - 1) // per_id),
        seed=0,
        query_per_id=1,
        gallery_per_id=per_id - 1,
        num_distractors=0,
        num_junk=0,
    )
    ds = Path(info.root)
    paths = sorted(str(p) for p in (ds / "query").glob("*.jpg")) + sorted(
        str(p) for p in (ds / "bounding_box_test").glob("*.jpg")
    )
    return paths[:n]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="synthetic 128x64 JPEGs to create (default 2000)")
    ap.add_argument("--src", default=None, help="folder of Market-named *.jpg to use instead")
    ap.add_argument("--workers", type=int, default=None, help="default: one per core")
    ap.add_argument("--backend", choices=["thread", "process", "both"], default="thread")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args(argv)

    cfg = load_config()
    h, w = (int(v) for v in cfg.INPUT.SIZE_TEST)
    work = Path(tempfile.mkdtemp(prefix="bench_preprocess."))
    try:
        if args.src:
            paths = sorted(str(p) for p in Path(args.src).glob("*.jpg"))
        else:
            t = time.perf_counter()
            paths = make_images(work / "data", args.n)
            print(f"generated {len(paths)} synthetic 128x64 JPEGs in {time.perf_counter() - t:.2f} s")
        items = []
        for p in paths:
            parsed = parse_market_name(p)
            if parsed is not None:
                items.append(CacheItem(p, parsed[0], parsed[1], "query"))
        paths = [it.path for it in items]
        n = len(paths)
        workers = args.workers or len(os.sched_getaffinity(0))
        print(f"images: {n}, cores: {len(os.sched_getaffinity(0))}, workers: {workers}")
        for p in paths:  # warm the page cache for both contenders alike
            Path(p).read_bytes()

        t = time.perf_counter()
        seed_style(paths, work / "seed_bins", h, w, cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD)
        base = n / (time.perf_counter() - t)
        print(f"baseline (seed-style, PIL, 1 process, float32 .bin per image): {base:8.0f} img/s")

        backends = ["thread", "process"] if args.backend == "both" else [args.backend]
        best = 0.0
        cache = None
        for backend in backends:
            out = work / f"cache_{backend}"
            t = time.perf_counter()
            cache = preprocess_dataset(items, out, cfg, workers=workers, progress=False, backend=backend)
            rate = n / (time.perf_counter() - t)
            best = max(best, rate)
            print(
                f"ours ({backend} x{workers}, uint8 tensor cache):                 {rate:8.0f} img/s"
                f"  ({rate / base:.1f}x baseline)"
            )

        assert cache is not None
        t = time.perf_counter()
        nb = sum(b.shape[0] for b in cache.iter_batches(128))
        print(
            f"float32 NCHW batches from the cache (bs 128):                 {nb / (time.perf_counter() - t):8.0f} img/s"
        )
        t = time.perf_counter()
        cache.write_seed_layout(work / "seed_layout", workers=workers, progress=False)
        print(
            f"seed layout write (float32 .bin per image + info file):       {n / (time.perf_counter() - t):8.0f} img/s"
        )
        # the two outputs agree within one grey level
        ref = np.fromfile(work / "seed_bins" / (Path(paths[0]).stem + ".bin"), dtype=np.float32)
        ours = cache.batch(0, 1).ravel()
        print(f"max |ours - baseline| on image 0: {np.abs(ref - ours).max():.4f} (<= 0.02 required)")
        print(f"RATIO ours/baseline: {best / base:.1f}x (goal >= 10x and >= 3000 img/s)")
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
