"""The whole validation in one process (``reid-validate run``): the DAG's steps, chained, no Airflow."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import steps
from .errors import ReidError
from .utils import log

TABLE_COLUMNS = (
    ("target", "target", "{}"),
    ("batch", "batch_size", "{}"),
    ("precision", "precision", "{}"),
    ("img/s", "throughput", "{:.1f}"),
    ("p99 ms", "latency_p99", "{:.1f}"),
    ("Rank-1", "rank1", "{:.2f}"),
    ("Rank-5", "rank5", "{:.2f}"),
    ("Rank-10", "rank10", "{:.2f}"),
    ("mAP", "mAP", "{:.2f}"),
    ("mINP", "mINP", "{:.2f}"),
    ("min cos", "min_cosine", "{:.5f}"),
    ("flag", "flag", "{}"),
)


@dataclass(frozen=True)
class PipelineResult:
    """What one local run produced."""

    run_key: str
    status: str
    rows: list[dict[str, Any]]
    verdict: dict[str, Any]
    batch_invariant: bool
    context: dict[str, Any] = field(default_factory=dict)


def summary_rows(evaluations: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per artifact: perf and accuracy side by side."""
    rows = []
    for e in evaluations:
        m, perf = e["metrics"], e["perf"]
        rows.append(
            {
                "target": e["target"],
                "batch_size": e["batch_size"],
                "precision": e["precision"],
                "throughput": perf["throughput_best"],
                "latency_p99": perf["latency_ms_p99"],
                **{k: m[k] for k in ("rank1", "rank5", "rank10", "mAP", "mINP")},
                "min_cosine": e["parity"]["min_cosine"],
                "flag": "; ".join(e["flag_reasons"]) if e["flagged"] else "",
            }
        )
    return rows


def format_table(rows: list[Mapping[str, Any]]) -> str:
    """A plain-text table of ``summary_rows``."""
    header = [c[0] for c in TABLE_COLUMNS]
    body = [[fmt.format(r[key]) if r.get(key) is not None else "-" for _, key, fmt in TABLE_COLUMNS] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *body, strict=True)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in body]
    return "\n".join(lines)


def batch_invariance(evaluations: list[Mapping[str, Any]], tolerance_pt: float) -> list[str]:
    """Problems where a metric at batch B differs from batch 1 (same target and precision) by > tolerance."""
    problems = []
    base = {(e["target"], e["precision"]): e for e in evaluations if e["batch_size"] == 1}
    for e in evaluations:
        ref = base.get((e["target"], e["precision"]))
        if ref is None or e is ref:
            continue
        for key in ("rank1", "rank5", "rank10", "mAP"):
            diff = abs(e["metrics"][key] - ref["metrics"][key])
            if diff > tolerance_pt:
                problems.append(
                    f"{e['target']} {e['precision']}: {key} at batch {e['batch_size']} = {e['metrics'][key]:.2f} "
                    f"vs {ref['metrics'][key]:.2f} at batch 1 (diff {diff:.2f} pt > {tolerance_pt} pt)"
                )
    return problems


def run(params: Mapping[str, Any], *, run_key: str | None = None, trigger: str = "cli") -> PipelineResult:
    """prepare -> export + preprocess -> reference -> convert/benchmark/evaluate per combination -> record ->
    check regressions -> finish. The run is marked failed in the results database if a step raises."""
    ctx = steps.prepare_run(params, run_key=run_key, trigger=trigger)
    try:
        export = steps.export_model(ctx)
        data = steps.preprocess_data(ctx)
        reference = steps.reference_features(ctx, data)
        combos = steps.plan_combinations(ctx)
        if not combos:
            raise ReidError(
                f"nothing to run: no target in {ctx['targets']} can build any of the precisions {ctx['precisions']}"
            )
        evaluations = []  # a combination that fails is recorded as a failure row, the others still run
        for e in steps.iter_evaluations(ctx, combos, export, data, reference):
            log.info(
                "%s bs%d %s: %.1f img/s, Rank-1 %.2f, mAP %.2f",
                e["target"],
                e["batch_size"],
                e["precision"],
                e["perf"]["throughput_best"],
                e["metrics"]["rank1"],
                e["metrics"]["mAP"],
            )
            evaluations.append(e)
        evaluations = steps.finalize_parity(ctx, evaluations)
        recorded = steps.record_results(ctx, evaluations, export, data)
        verdict = steps.check_regressions(ctx)
        verdict["failures"] = recorded["failures"]
    except BaseException:
        steps.finish_run(ctx, "failed")
        raise
    # a failed artifact makes the run 'failed', or 'regressed' when alerts fire too (finish_run maps 'success')
    status = steps.finish_run(ctx, "failed" if recorded["failures"] and not verdict.get("alerts") else "success")
    tolerance = float(steps.cfg_of(ctx).VALIDATION.RULES.BATCH_INVARIANCE)
    return PipelineResult(
        run_key=ctx["run_key"],
        status=status,
        rows=summary_rows(evaluations),
        verdict=verdict,
        batch_invariant=not batch_invariance(evaluations, tolerance),
        context=dict(ctx),
    )
