"""record_results: the run (hashes, dataset fingerprint, the workers' environment) and its perf, accuracy and
failure rows into the results store, with the parity gate settled across artifacts. A re-run updates."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..hardware import is_simulated
from .artifact import finalize_parity
from .context import cfg_of, run_info, store_of
from .failures import run_failures


def _eval_config(cfg: Any) -> dict[str, Any]:
    """The evaluation config that is part of a series' identity."""
    return {"neck_feat": str(cfg.TEST.NECK_FEAT), "feat_norm": cfg.TEST.FEAT_NORM == "yes"}


def _perf_row(perf: Mapping[str, Any], precision: str, eval_config: Mapping[str, Any]) -> Any:
    from ..results import PerfRow

    return PerfRow(
        target=perf["target"],
        device_kind=str(perf["device_kind"]),
        batch_size=int(perf["batch_size"]),
        precision=perf.get("precision") or precision,
        mode=perf.get("mode", "real"),
        throughput_best=float(perf["throughput_best"]),
        throughput_median=float(perf["throughput_median"]),
        latency_mean_ms=perf.get("latency_ms_mean"),
        latency_p50_ms=perf.get("latency_ms_p50"),
        latency_p90_ms=perf.get("latency_ms_p90"),
        latency_p99_ms=perf.get("latency_ms_p99"),
        e2e_throughput=perf.get("e2e_throughput"),
        card_throughput=perf.get("card_throughput"),
        samples=int(perf["samples"]),
        repetitions=int(perf["repeats"]),
        warmup=int(perf.get("warmup", 0)),
        device_id=None if perf.get("device_id") is None else str(perf["device_id"]),
        tool_versions=dict(perf.get("tool_versions") or {}),
        artifact_sha256=(perf.get("extra") or {}).get("artifact_sha256"),
        simulated=is_simulated(perf),
        hardware=dict(perf.get("hardware") or {}),
        device_host=perf.get("device_host"),
        neck_feat=eval_config["neck_feat"],
        feat_norm=eval_config["feat_norm"],
    )


def _accuracy_row(e: Mapping[str, Any], eval_config: Mapping[str, Any]) -> Any:
    """The accuracy row of one evaluated artifact (``evaluate_artifact``'s record, parity settled)."""
    from ..results import AccuracyRow

    m, c, p = e["metrics"], e["counts"], e["parity"]
    return AccuracyRow(
        target=e["target"],
        batch_size=int(e["batch_size"]),
        precision=e["precision"],
        rank1=m["rank1"],
        rank5=m["rank5"],
        rank10=m["rank10"],
        mAP=m["mAP"],
        mINP=m["mINP"],
        valid_queries=c["valid_queries"],
        gallery_size=c["gallery_size"],
        feat_norm=bool(e["feat_norm"]),
        re_ranking=bool(e["re_ranking"]),
        parity_min_cosine=p["min_cosine"],
        parity_mean_cosine=p["mean_cosine"],
        parity_max_abs_diff=p["max_abs_diff"],
        flagged=bool(e["flagged"]),
        flag_reason="; ".join(e["flag_reasons"]) or None,
        simulated=bool(e.get("simulated") or e["perf"].get("simulated")),
        parity_passed=p.get("passed"),
        parity_sample_size=p.get("sample_size"),
        parity_detail={k: v for k, v in p.items() if k not in ("min_cosine", "mean_cosine", "max_abs_diff")},
        calibration_fingerprint=e.get("calibration_fingerprint"),
        neck_feat=eval_config["neck_feat"],
    )


def _worker_environment(evaluations: Sequence[Mapping[str, Any]], extra: Mapping[str, Any]) -> dict[str, Any]:
    """The run's environment as the benchmark workers saw it: one worker's environment (all alike), else this
    host's with each target's worker under ``workers``; ``extra`` (devices, tool versions) on top."""
    from ..results import collect_environment

    workers = {e["perf"]["target"]: e["perf"]["environment"] for e in evaluations if e["perf"].get("environment")}
    distinct = {json.dumps(w, sort_keys=True, default=str) for w in workers.values()}
    if len(distinct) == 1:
        return {**next(iter(workers.values())), **extra}
    env = collect_environment(extra)
    if workers:
        env["workers"] = workers
    return env


#: the failure record's keys (``failures.capture_failure``) that a FailureRow stores
_FAILURE_FIELDS = ("target", "batch_size", "precision", "stage", "message", "log_tail", "attempt")


def record_results(
    ctx: Mapping[str, Any],
    evaluations: Sequence[Mapping[str, Any]],
    export: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Upsert the run (with model/ONNX hashes, dataset fingerprint, environment) and its perf/accuracy rows,
    with the parity gate settled across artifacts; ``failures``: the artifacts that failed (``capture_failure``)."""
    from ..results import FailureRow

    evaluations = finalize_parity(ctx, evaluations)
    eval_config = _eval_config(cfg_of(ctx))
    store = store_of(ctx)
    env_extra: dict[str, Any] = {}
    for e in evaluations:
        perf = e["perf"]
        env_extra.setdefault("devices", {})[perf["target"]] = {
            "device_kind": perf["device_kind"],
            "device_id": perf.get("device_id"),
        }
        for k, v in (perf.get("tool_versions") or {}).items():
            env_extra.setdefault("tool_versions", {})[f"{perf['target']}:{k}"] = v
    store.start_run(
        run_info(
            ctx,
            model_sha256=(export or {}).get("checkpoint_sha256"),
            onnx_sha256=(export or {}).get("onnx_sha256"),
            dataset_fingerprint=dict((data or {}).get("dataset_fingerprint") or {}),
            environment=_worker_environment(evaluations, env_extra),
        ),
        reset_status=False,
    )
    perf_rows = acc_rows = 0
    for e in evaluations:
        for perf in (e["perf"], e.get("perf_pure")):
            if perf:
                store.record_perf(ctx["run_key"], _perf_row(perf, e["precision"], eval_config))
                perf_rows += 1
        store.record_accuracy(ctx["run_key"], _accuracy_row(e, eval_config))
        acc_rows += 1
    for e in evaluations:  # a retried task that succeeded replaces its failure row
        store.clear_failure(ctx["run_key"], e["target"], int(e["batch_size"]), e["precision"])
    failures = run_failures(ctx, evaluations)
    for f in failures:
        store.record_failure(ctx["run_key"], FailureRow(**{k: f[k] for k in _FAILURE_FIELDS if k in f}))
    return {
        "run_key": ctx["run_key"],
        "perf_rows": perf_rows,
        "accuracy_rows": acc_rows,
        "failures": [{k: f[k] for k in ("target", "batch_size", "precision", "stage", "message")} for f in failures],
    }
