"""Preprocessing throughput: the seed's ReID_preprocess.py style vs reid_tasks.preprocess, in one run.

Baseline (as the seed): one process, per image PIL open -> convert('RGB') -> resize bilinear ->
numpy /255 -> normalise -> float32 CHW ``tofile(<stem>.bin)``.
Ours: ``preprocess_dataset`` into the uint8 tensor cache with one worker per core, threads and forked
processes (its default "auto" picks processes for a set this size); the seed-layout write
(``TensorCache.write_seed_layout``) is timed separately. Both run ``--runs`` times alternately; the ratio
is the median of the per-run ratios. The cache's uint8 rows are then compared with PIL's
``Resize([256, 128])`` output on every image: the max difference must be 0.

    .venv/bin/python benchmarks/bench_preprocess.py [--n 2000] [--runs 3] [--src DIR] [--workers N]
        [--backend thread|process|both] [--pillow-only]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reid_tasks.config import load_config
from reid_tasks.datasets import make_synthetic_market1501, parse_market_name
from reid_tasks.preprocess import CacheItem, image, preprocess_dataset, reference_resized
from reid_tasks.utils import cpu_flags


def cpu_description() -> str:
    """CPU model, cores and the SIMD extensions that matter for decode/resize."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    isa = [f for f in ("sse4_2", "avx2", "avx512f", "avx512bw", "avx512_vnni", "neon", "asimd") if f in cpu_flags()]
    return f"{model}, {len(os.sched_getaffinity(0))} cores, {platform.machine()} ISA {' '.join(isa) or 'baseline'}"


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


def max_diff_vs_pil(cache, h: int, w: int) -> int:
    """Largest |ours - PIL| in grey levels over every pixel of every cached image."""
    worst = 0
    for i, it in enumerate(cache.items):
        ours = np.asarray(cache.uint8(i, i + 1)[0]).astype(np.int16)
        worst = max(worst, int(np.abs(ours - reference_resized(it.path, h, w)).max()))
    return worst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="synthetic 128x64 JPEGs to create (default 2000)")
    ap.add_argument("--runs", type=int, default=3, help="baseline/ours runs; the ratio is their median (default 3)")
    ap.add_argument("--src", default=None, help="folder of Market-named *.jpg to use instead")
    ap.add_argument("--workers", type=int, default=None, help="default: one per core")
    ap.add_argument("--backend", choices=["thread", "process", "both"], default="both")
    ap.add_argument(
        "--pillow-only", action="store_true", help="also time ours with Pillow's resize for the 2x case (no OpenCV)"
    )
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
        print(f"CPU: {cpu_description()}")
        print(f"images: {n}, workers: {workers}, runs: {args.runs}")
        for p in paths:  # warm the page cache for both contenders alike
            Path(p).read_bytes()

        backends = ["thread", "process"] if args.backend == "both" else [args.backend]
        if args.pillow_only:
            backends += [f"{b} pillow-only" for b in backends]
        bases: list[float] = []
        ours: dict[str, list[float]] = {b: [] for b in backends}
        cache = None
        for run in range(args.runs):
            shutil.rmtree(work / "seed_bins", ignore_errors=True)
            t = time.perf_counter()
            seed_style(paths, work / "seed_bins", h, w, cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD)
            bases.append(n / (time.perf_counter() - t))
            for backend in backends:
                out = work / f"cache_{backend}_{run}"
                image.FAST_2X = not backend.endswith("pillow-only")
                t = time.perf_counter()
                built = preprocess_dataset(items, out, cfg, workers=workers, progress=False, backend=backend.split()[0])
                ours[backend].append(n / (time.perf_counter() - t))
                image.FAST_2X = True
                if not backend.endswith("pillow-only"):
                    cache = built
                if run < args.runs - 1:
                    shutil.rmtree(out)
            line = "  ".join(f"ours {b} {ours[b][-1]:7.0f} img/s" for b in backends)
            print(f"run {run + 1}: baseline {bases[-1]:6.0f} img/s  {line}")

        base = statistics.median(bases)
        print(f"baseline (seed-style, PIL, 1 process, float32 .bin per image): {base:8.0f} img/s (median)")
        best = 0.0
        for backend in backends:
            rate = statistics.median(ours[backend])
            ratio = statistics.median(o / b for o, b in zip(ours[backend], bases, strict=True))
            if not backend.endswith("pillow-only"):
                best = max(best, ratio)
            print(f"ours ({backend} x{workers}, uint8 tensor cache): {rate:8.0f} img/s  ({ratio:.1f}x)")

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
        diff = max_diff_vs_pil(cache, h, w)
        print(f"max |ours - PIL Resize([{h}, {w}])| over all {n} images (uint8): {diff} (must be 0)")
        print(f"RATIO ours/baseline: {best:.1f}x (median of {args.runs} runs; goal >= 10x)")
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if diff == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
