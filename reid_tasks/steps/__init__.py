"""The validation steps as plain functions over small JSON-able dicts; each sequences library calls.

The DAG calls one function per task and passes their return values through XCom; ``pipeline.run`` chains
the same functions in one process. Each step reads its inputs from files named in the dicts and writes its
outputs atomically under the run directory, so a retried step neither duplicates rows nor leaves partial
files::

    ctx = prepare_run(params, run_key=..., trigger=...)
    export = export_model(ctx);   data = preprocess_data(ctx);   ref = reference_features(ctx, data)
    for combo in plan_combinations(ctx):                      # one per (target, batch size, precision)
        with capture_failure(ctx, "convert", combo):         # a failure is written to the run dir, re-raised
            art = convert_artifact(ctx, export, **combo)
        bench = benchmark_artifact(ctx, art, data)           # (same wrapper, stage "benchmark")
        evaluations.append(evaluate_artifact(ctx, bench, data, ref))   # (stage "evaluate")
    recorded = record_results(ctx, evaluations, export, data)   # + parity across artifacts, failure rows
    verdict = check_regressions(ctx)               # alerts stored; the DAG fails the run if any
    status = finish_run(ctx, "failed" if recorded["failures"] and not verdict["alerts"] else "success")

One module per stage, in the order a run meets them: ``context`` (config, store and RunInfo of a run),
``prepare``, ``inputs`` (export, tensor cache, calibration set, PyTorch reference), ``artifact`` (plan,
convert, benchmark, evaluate), ``failures``, ``record``, ``verdict`` (reference, rules, finish).
"""

from __future__ import annotations

from .artifact import (
    benchmark_artifact,
    convert_artifact,
    evaluate_artifact,
    finalize_parity,
    iter_evaluations,
    plan_combinations,
)
from .context import cfg_of, config_opts, local_run_key, run_info, safe_name
from .failures import FAILURE_STAGES, FAILURES_DIR, capture_failure, run_failures
from .inputs import calibration_set, export_model, preprocess_data, reference_features
from .prepare import prepare_run, prepare_triggered_run, resolve_inputs
from .record import record_results
from .verdict import PUBLISHED_RERANK, RELEASED_CHECKPOINT_MD5, check_regressions, finish_run, reference_applies

__all__ = [
    "FAILURES_DIR",
    "FAILURE_STAGES",
    "PUBLISHED_RERANK",
    "RELEASED_CHECKPOINT_MD5",
    "benchmark_artifact",
    "calibration_set",
    "capture_failure",
    "cfg_of",
    "check_regressions",
    "config_opts",
    "convert_artifact",
    "evaluate_artifact",
    "export_model",
    "finalize_parity",
    "finish_run",
    "iter_evaluations",
    "local_run_key",
    "plan_combinations",
    "prepare_run",
    "prepare_triggered_run",
    "preprocess_data",
    "record_results",
    "reference_applies",
    "reference_features",
    "resolve_inputs",
    "run_failures",
    "run_info",
    "safe_name",
]
