"""CPU inference targets side by side, all in one run (issue 3, section 7).

At batch 16 on this machine: PyTorch eager fp32 (the reference), ONNX Runtime fp32 / int8, OpenVINO fp32 /
bf16 / int8. Prints throughput (pure inference, random input, samples/s), the ratio to eager, the GFLOP/s
achieved (8.1 GFLOP per image) next to the machine's measured SGEMM and bf16 GEMM GFLOP/s, latency p50/p99
at batch 1, and the accuracy rule of section 6 on a synthetic Market-1501 (parity with the PyTorch fp32
features; Rank-1/mAP within 0.5 pt of fp32), then the best CPU target within the rule.

    .venv/bin/python benchmarks/bench_targets.py [--ids 48] [--work DIR] [--json OUT.json]

Goals: best target within the accuracy rule >= 6x eager; ONNX Runtime fp32 >= 1.4x eager.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from reid_tasks.config import load_config
from reid_tasks.targets import get_target
from reid_tasks.targets.parity import assess, evaluate_features
from reid_tasks.utils import cpu_count, cpu_flags

GFLOP_PER_IMAGE = 8.1
CONFIGS = [
    ("pytorch", "fp32"),
    ("onnxruntime", "fp32"),
    ("onnxruntime", "int8"),
    ("openvino", "fp32"),
    ("openvino", "bf16"),
    ("openvino", "int8"),
]


def gemm_gflops(dtype: str, n: int = 4096, reps: int = 3) -> float:
    """Best-of-``reps`` GFLOP/s of an n x n x n matmul (fp32 via numpy, bf16 via torch on the CPU)."""
    import torch

    torch.set_num_threads(cpu_count())
    if dtype == "fp32":
        a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
        b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
        f = lambda: a @ b  # noqa: E731
    else:
        a = torch.randn(n, n, dtype=torch.bfloat16)
        b = torch.randn(n, n, dtype=torch.bfloat16)
        f = lambda: torch.matmul(a, b)  # noqa: E731
    f()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def prepare(work: Path, num_ids: int) -> tuple[Any, Path, Any]:
    """Synthetic Market-1501 -> tensor cache; demo checkpoint; ONNX export (all reused when present)."""

    from reid_tasks.datasets import Market1501
    from reid_tasks.demo import ensure_demo_data
    from reid_tasks.export import export_onnx
    from reid_tasks.preprocess import preprocess_dataset

    work.mkdir(parents=True, exist_ok=True)
    base = load_config()
    demo = ensure_demo_data(work / "demo", num_ids=num_ids)  # the product's demo set and checkpoint
    cache = preprocess_dataset(Market1501(demo.dataset_root), work / "cache", base, progress=False)
    cfg = load_config(opts=["TEST.WEIGHT", demo.checkpoint])
    report = export_onnx(cfg, work / "ReID.onnx")
    return cfg, Path(report.onnx_path), cache


def bench_one(name: str, precision: str, cfg: Any, onnx: Path, cache: Any, args: argparse.Namespace) -> dict:
    target = get_target(name, cfg)
    row: dict[str, Any] = {"target": name, "precision": precision}
    if precision not in target.supported_precisions():
        row["skipped"] = f"{name} cannot do {precision} here ({list(target.supported_precisions())})"
        return row
    art_dir = args.work / "artifacts"
    art = target.convert(onnx, args.batch, precision, art_dir, calibration=cache)
    row["build_seconds"] = art.build_seconds
    feats, _ = target.run(art, cache, warmup=1, repeats=1)
    row["features"] = feats
    pure = target.benchmark_pure(art, batches=args.pure_batches, repeats=args.repeats, warmup=1, data="random")
    row["throughput"] = pure.throughput_median
    row["throughput_best"] = pure.throughput_best
    row["latency_ms_p50_b16"] = pure.latency_ms_p50
    art1 = target.convert(onnx, 1, precision, art_dir, calibration=cache)
    lat = target.benchmark_pure(art1, batches=args.latency_batches, repeats=1, warmup=2, data="random")
    row["latency_ms_p50_b1"] = lat.latency_ms_p50
    row["latency_ms_p99_b1"] = lat.latency_ms_p99
    row["execution"] = pure.extra.get("execution_precision") or pure.extra.get("providers")
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "reid-bench-targets")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--pure-batches", type=int, default=3, help="batches per timed repetition")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--latency-batches", type=int, default=20, help="timed batch-1 inferences")
    ap.add_argument("--ids", type=int, default=48, help="identities in the synthetic Market-1501")
    ap.add_argument("--gemm-size", type=int, default=4096)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    t_start = time.perf_counter()
    sgemm = gemm_gflops("fp32", args.gemm_size)
    bgemm = gemm_gflops("bf16", args.gemm_size)
    cfg, onnx, cache = prepare(args.work, args.ids)
    rows = [bench_one(n, p, cfg, onnx, cache, args) for n, p in CONFIGS]

    ref_row = rows[0]
    if "features" not in ref_row:
        print("PyTorch eager fp32 reference did not run", file=sys.stderr)
        return 1
    ref = ref_row["features"]
    fp32_metrics = evaluate_features(ref, cache, cfg)
    for r in rows:
        if "features" not in r:
            continue
        metrics = evaluate_features(r["features"], cache, cfg)
        a = assess(r.pop("features"), ref, metrics, fp32_metrics, r["precision"], cfg)
        r.update(
            ratio=r["throughput"] / ref_row["throughput"],
            gflops=r["throughput"] * GFLOP_PER_IMAGE,
            min_cosine=a.min_cosine,
            max_abs_diff=a.max_abs_diff,
            rank1=100 * metrics.rank1,
            mAP=100 * metrics.mAP,
            within_rule=not a.flagged,
            reasons=a.reasons,
        )

    flags = sorted(f for f in cpu_flags() if f in ("avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8"))
    print(f"\nCPU: {cpu_count()} cores, flags {flags}; batch {args.batch}; {len(cache)} synthetic images for accuracy")
    print(f"SGEMM fp32 {args.gemm_size}^3: {sgemm:.0f} GFLOP/s   bf16 GEMM (torch CPU): {bgemm:.0f} GFLOP/s\n")
    head = (
        f"{'target':<12} {'prec':<5} {'img/s':>7} {'x eager':>7} {'GFLOP/s':>8} {'%SGEMM':>7} "
        f"{'b1 p50 ms':>9} {'b1 p99 ms':>9} {'min cos':>8} {'R1':>6} {'mAP':>6}  rule"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        if "skipped" in r:
            print(f"{r['target']:<12} {r['precision']:<5} skipped: {r['skipped']}")
            continue
        print(
            f"{r['target']:<12} {r['precision']:<5} {r['throughput']:7.1f} {r['ratio']:7.2f} {r['gflops']:8.0f} "
            f"{100 * r['gflops'] / sgemm:6.0f}% {r['latency_ms_p50_b1']:9.1f} {r['latency_ms_p99_b1']:9.1f} "
            f"{r['min_cosine']:8.5f} {r['rank1']:6.1f} {r['mAP']:6.1f}  {'ok' if r['within_rule'] else 'FLAGGED'}"
        )
    ok_rows = [r for r in rows if r.get("within_rule")]
    best = max(ok_rows, key=lambda r: r["throughput"]) if ok_rows else None
    ort = next((r for r in rows if r["target"] == "onnxruntime" and r["precision"] == "fp32" and "ratio" in r), None)
    print()
    if best:
        verdict = "MET" if best["ratio"] >= 6 else "NOT MET"
        print(
            f"best within the accuracy rule: {best['target']} {best['precision']} {best['ratio']:.2f}x eager "
            f"(goal >= 6x: {verdict})"
        )
    if ort:
        verdict = "MET" if ort["ratio"] >= 1.4 else "NOT MET"
        print(f"ONNX Runtime fp32: {ort['ratio']:.2f}x eager (goal >= 1.4x: {verdict})")
    for r in rows:
        for reason in r.get("reasons", []):
            print(f"  flagged {r['target']} {r['precision']}: {reason}")
    print(
        f"\n(total {time.perf_counter() - t_start:.0f} s; throughput = median of {args.repeats} passes of "
        f"{args.pure_batches} batches, random input; machine shared: indicative only)"
    )
    if args.json:
        args.json.write_text(
            json.dumps({"sgemm_gflops": sgemm, "bf16_gemm_gflops": bgemm, "rows": rows}, indent=2, default=str)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
