"""Disk use of a demo-sized run on the Ascend target (TEST DOUBLES: no NPU; sizes only, never Ascend results).

Before: every Ascend benchmark writes the seed's float32 .bin layout into its own artifact directory
(``write_seed_layout(<artifact>/bench/input)``, what ascend.py did until the shared layout). After: the layout
is written once per cache content under ``<artifacts_root>/cache/_seed_layouts/<fingerprint>`` and shared by
every artifact and run (``TensorCache.seed_layout()``). Each mode runs the same pipeline (export, preprocess,
convert + benchmark + evaluate per artifact, record) into its own artifacts root; "after" runs twice to show a
second run adds no layout. Printed: bytes under each run directory (as recorded in finished.json), the shared
caches and layouts, and the whole root.

    .venv/bin/python benchmarks/bench_disk_use.py [--batch-sizes 1 16] [--precisions fp16 fp32]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DOUBLES = ROOT / "tests" / "doubles"

from reid_tasks import pipeline  # noqa: E402
from reid_tasks.demo import ensure_demo_data  # noqa: E402
from reid_tasks.preprocess import TensorCache  # noqa: E402
from reid_tasks.storage import disk_usage, human  # noqa: E402


def run_once(work: Path, root: Path, demo, run_key: str, args: argparse.Namespace) -> Path:
    install = work / "no-cann"
    install.mkdir(exist_ok=True)
    result = pipeline.run(
        {
            "dataset_root": demo.dataset_root,
            "checkpoint": demo.checkpoint,
            "targets": ["ascend310"],
            "batch_sizes": args.batch_sizes,
            "precisions": args.precisions,
            "db_url": f"sqlite:///{work / 'results.sqlite'}",
            "config_overrides": {
                "VALIDATION.ARTIFACTS_ROOT": str(root),
                "VALIDATION.ASCEND.INSTALL_PATH": str(install),
                "VALIDATION.BENCH.REPEATS": 1,
                "VALIDATION.PURE": False,
            },
        },
        run_key=run_key,
    )
    if result.status not in ("success", "regressed"):
        raise SystemExit(f"run {run_key} ended {result.status}")
    return root / run_key.replace("/", "_")


def report(label: str, root: Path, runs: list[Path]) -> int:
    per_run = [json.loads((r / "finished.json").read_text())["disk_bytes"] for r in runs]
    layouts = disk_usage(root / "cache" / "_seed_layouts")
    caches = disk_usage(root / "cache") - layouts
    total = disk_usage(root)
    in_runs = sum(disk_usage(p.parent) for r in runs for p in r.rglob("prep_bin.info"))
    print(f"{label}:")
    for r, b in zip(runs, per_run, strict=True):
        print(f"  run {r.name:<14} {human(b):>10} under the run directory (finished.json disk_bytes)")
    print(f"  seed layouts inside run directories: {human(in_runs):>10}")
    print(f"  shared seed layouts:                  {human(layouts):>10}")
    print(f"  tensor cache (uint8):                 {human(caches):>10}")
    print(f"  whole artifacts root:                 {human(total):>10}")
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--precisions", nargs="+", default=["fp16", "fp32"])
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)

    os.environ["PATH"] = os.pathsep.join([str(DOUBLES / "bin"), str(Path(sys.executable).parent), os.environ["PATH"]])
    os.environ["PYTHONPATH"] = str(DOUBLES / "python")
    work = Path(tempfile.mkdtemp(prefix="bench_disk_use."))
    try:
        demo = ensure_demo_data(work / "demo")
        n_art = len(args.batch_sizes) * len(args.precisions)
        print(f"demo set (synthetic Market-1501, default size), {n_art} Ascend artifacts per run, TEST DOUBLES\n")

        shared = TensorCache.seed_layout
        del TensorCache.seed_layout  # the Ascend target then writes the layout per artifact, as before
        try:
            before_root = work / "before"
            before = report(
                "before (layout per artifact)", before_root, [run_once(work, before_root, demo, "b/1", args)]
            )
        finally:
            TensorCache.seed_layout = shared
        after_root = work / "after"
        runs = [run_once(work, after_root, demo, "a/1", args), run_once(work, after_root, demo, "a/2", args)]
        after = report("after (one shared layout per cache content; two runs)", after_root, runs)
        first, second = (json.loads((r / "finished.json").read_text())["disk_bytes"] for r in runs)
        one_after = first + disk_usage(after_root / "cache")
        print(
            f"\nONE RUN: {human(before)} before, {human(one_after)} after ({before / max(one_after, 1):.1f}x less); "
            f"a second run adds {human(second)} and no layout (two runs: {human(after)})"
        )
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
