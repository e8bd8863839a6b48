"""One artifact's steps: plan the (target, batch size, precision) combinations, convert, benchmark on a leased
device, evaluate (Rank-k / mAP and the parity gate); ``iter_evaluations`` chains them in one process."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ReidError
from ..hardware import is_simulated
from ..utils import atomic_save_npy, log
from .context import cfg_of
from .failures import capture_failure
from .inputs import calibration_set


def plan_combinations(ctx: Mapping[str, Any], target: str | None = None) -> list[dict[str, Any]]:
    """(target, batch_size, precision) combinations of the run; ones a target cannot do are dropped (logged)."""
    from ..targets import get_target

    combos = []
    for name in [target] if target else ctx["targets"]:
        if name not in ctx["targets"]:
            continue
        supported = get_target(name, cfg_of(ctx)).supported_precisions()
        for precision in ctx["precisions"]:
            if precision not in supported:
                log.warning("plan: %s cannot build %s here (supports %s): not scheduled", name, precision, supported)
                continue
            combos += [{"target": name, "batch_size": b, "precision": precision} for b in ctx["batch_sizes"]]
    return combos


def artifact_dir(ctx: Mapping[str, Any], target: str, batch_size: int, precision: str) -> Path:
    return Path(ctx["run_dir"]) / "artifacts" / target / f"bs{batch_size}_{precision}"


def convert_artifact(
    ctx: Mapping[str, Any], export: Mapping[str, Any], target: str, batch_size: int, precision: str
) -> dict[str, Any]:
    """ONNX -> the target's artifact for one (batch size, precision)."""
    from ..targets import get_target

    t = get_target(target, cfg_of(ctx))
    calibration = calibration_set(ctx) if precision == "int8" else None
    art = t.convert(
        export["onnx_path"],
        int(batch_size),
        precision,
        artifact_dir(ctx, target, batch_size, precision),
        calibration=calibration,
    )
    return art.to_dict()


def benchmark_artifact(ctx: Mapping[str, Any], artifact: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """Benchmark one artifact on a leased device: the bounded pure-inference benchmark first (stable throughput
    and latency percentiles), then ONE pass over the dataset (features + end-to-end throughput), planned from
    the measured throughput so a pass that cannot fit the task's time limit stops before it starts."""
    import time

    from ..fleet import lease_for, local_host
    from ..hardware import measured_on
    from ..preprocess import TensorCache
    from ..runcost import dataset_pass_budget
    from ..targets import Artifact, get_target

    started = time.monotonic()
    cfg = cfg_of(ctx)
    bench = cfg.VALIDATION.BENCH
    art = Artifact.from_dict(artifact)
    t = get_target(art.target, cfg)
    out_dir = artifact_dir(ctx, art.target, int(art.batch_size or 0), art.precision) / "bench"
    what = f"{art.target} bs{art.batch_size} {art.precision}"
    with lease_for(t, label=f"{ctx['run_key']} {what}") as lease:
        cache = TensorCache.open(data["cache_dir"])
        dev = lease.device.id if lease else None
        pure = t.benchmark_pure(art, **t.run_options(device_id=dev)) if cfg.VALIDATION.PURE else None
        budget = dataset_pass_budget(
            len(cache),
            pure.throughput_median if pure else None,
            min_throughput=float(bench.MIN_THROUGHPUT),
            left_s=float(bench.TASK_TIMEOUT_S) - (time.monotonic() - started),
            what=what,
        )
        feats, perf = t.run(art, cache, out_dir, repeats=1, **t.run_options(device_id=dev, timeout_s=budget.timeout_s))
        device = lease.as_dict() if lease else {"device_host": local_host(), "device_id": perf.device_id}
    feats_path = out_dir / "features.npy"
    if not feats_path.is_file():
        atomic_save_npy(feats_path, feats)
    return {
        "artifact": dict(artifact),
        "features_path": str(feats_path),
        "perf": measured_on(art.target, {**perf.to_dict(), **device}),
        "perf_pure": measured_on(art.target, {**pure.to_dict(), **device}) if pure else None,
        "budget": budget.as_dict(),
    }


def evaluate_artifact(
    ctx: Mapping[str, Any], bench: Mapping[str, Any], data: Mapping[str, Any], reference: Mapping[str, Any]
) -> dict[str, Any]:
    """Rank-k / mAP / mINP of one artifact's features over the full set, and its parity gate
    (reid_tasks.targets.parity): features vs the PyTorch reference on the parity sample; for reduced precisions
    Rank-1/mAP vs the PyTorch full-set result when the run has it. ``record_results`` settles the comparison
    with the same target's fp32 artifact, which only it sees."""
    from ..preprocess import TensorCache
    from ..targets.parity import (
        PYTORCH_SOURCE,
        REDUCED_PRECISIONS,
        apply_metric_rule,
        assess,
        evaluate_features,
        parity_record,
    )

    cfg = cfg_of(ctx)
    cache = TensorCache.open(data["cache_dir"])
    feats = np.load(bench["features_path"])
    if feats.shape != (len(cache), 2048):
        raise ReidError(f"{bench['features_path']}: features shape {feats.shape}, expected ({len(cache)}, 2048)")
    metrics = evaluate_features(feats, cache, cfg)
    got = metrics.percent()
    art = bench["artifact"]
    precision = art["precision"]
    batch_size = int(art["batch_size"] or bench["perf"]["batch_size"])
    indices = np.load(reference["indices_path"])
    ref = np.load(reference["path"])
    label = f"{art['target']} bs{batch_size} {precision}"
    assessment = assess(feats[indices], ref, precision=precision, cfg=cfg, label=label)
    pytorch = reference.get("metrics") if precision in REDUCED_PRECISIONS else None
    record = {
        "target": art["target"],
        "batch_size": batch_size,
        "precision": precision,
        "metrics": got,
        "counts": {
            "valid_queries": int(metrics.num_valid_queries),
            "gallery_size": int(metrics.num_gallery),
            "skipped_queries": int(metrics.num_skipped_queries),
        },
        "feat_norm": cfg.TEST.FEAT_NORM == "yes",
        "re_ranking": cfg.TEST.RE_RANKING == "yes",
        "parity": parity_record(
            assessment,
            sample_size=len(indices),
            fp32_source=PYTORCH_SOURCE if pytorch else None,
            fp32_metrics=pytorch,
        ),
        "calibration_fingerprint": (art.get("calibration") or {}).get("fingerprint") if precision == "int8" else None,
        "simulated": is_simulated(bench["perf"]),
        "perf": bench["perf"],
        "perf_pure": bench.get("perf_pure"),
        "artifact_sha256": art.get("sha256"),
    }
    return apply_metric_rule([record], cfg)[0]  # sets flagged / flag_reasons too


def finalize_parity(ctx: Mapping[str, Any], evaluations: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The run's evaluated records with the parity gate settled across artifacts: reduced precisions compared
    with their target's fp32 artifact (reid_tasks.targets.parity.apply_metric_rule). Idempotent."""
    from ..targets.parity import apply_metric_rule

    return apply_metric_rule([e for e in evaluations if e], cfg_of(ctx))


def iter_evaluations(
    ctx: Mapping[str, Any],
    combos: Iterable[Mapping[str, Any]],
    export: Mapping[str, Any],
    data: Mapping[str, Any],
    reference: Mapping[str, Any],
) -> Iterator[dict[str, Any]]:
    """Convert -> benchmark -> evaluate for each combination, in process (the local pipeline). A combination
    that fails is written as a failure record (``capture_failure``), logged, and the next one runs."""
    for combo in combos:
        try:
            with capture_failure(ctx, "convert", combo):
                art = convert_artifact(ctx, export, combo["target"], combo["batch_size"], combo["precision"])
            with capture_failure(ctx, "benchmark", combo):
                bench = benchmark_artifact(ctx, art, data)
            with capture_failure(ctx, "evaluate", combo):
                evaluated = evaluate_artifact(ctx, bench, data, reference)
        except Exception as exc:  # written by capture_failure: record_results stores it as a failure row
            log.error("%s bs%s %s failed (recorded): %s", combo["target"], combo["batch_size"], combo["precision"], exc)
            continue
        yield evaluated
