"""The UI's questions, answered by ``reid_tasks.results.ResultsStore`` (no SQL here).

Every function takes an open store and validated filters (``filters.py``) and returns JSON-able dicts,
so the pages, the JSON API and the CSV export show the same numbers. The store filters in SQL and puts
each run's Airflow dag_id / run_id on its rows, points and alerts, so a request costs a fixed number of
queries whatever the number of rows.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

from reid_tasks.results import AlertRecord, ResultsStore, RuleConfig
from reid_tasks.results.reads import read_results, read_series

from .filters import ResultFilters, SeriesSelector

# Columns of the results table and the CSV export, in order: (field, header, unit).
RESULT_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("started_at", "Started (UTC)", ""),
    ("run_key", "Run", ""),
    ("status", "Status", ""),
    ("trigger", "Trigger", ""),
    ("target", "Target", ""),
    ("device_kind", "Device", ""),
    ("device", "Benchmark device", ""),
    ("batch_size", "Batch", ""),
    ("precision", "Precision", ""),
    ("throughput_best", "Throughput best", "samples/s"),
    ("throughput_median", "Throughput median", "samples/s"),
    ("latency_p50_ms", "Latency p50", "ms"),
    ("latency_p99_ms", "Latency p99", "ms"),
    ("e2e_throughput", "E2E throughput", "samples/s"),
    ("card_throughput", "Card throughput", "samples/s"),
    ("pure_throughput", "Pure throughput", "samples/s"),
    ("rank1", "Rank-1", "%"),
    ("rank5", "Rank-5", "%"),
    ("rank10", "Rank-10", "%"),
    ("mAP", "mAP", "%"),
    ("mINP", "mINP", "%"),
    ("rerank_rank1", "Rank-1 re-ranked", "%"),
    ("rerank_mAP", "mAP re-ranked", "%"),
    ("flagged", "Parity flagged", ""),
    ("open_alerts", "Open alerts", ""),
)


def airflow_run(dag_id: str | None, run_id: str | None) -> dict[str, str] | None:
    """``{"dag_id", "run_id", "path"}`` of an Airflow DAG run; None for runs outside Airflow.

    ``path`` is relative to Airflow's base URL: ``dags/<dag_id>/runs/<run_id>`` (both quoted).
    """
    if not dag_id or not run_id:
        return None
    return {"dag_id": dag_id, "run_id": run_id, "path": f"dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"}


def report_path(run_key: str, dag_id: str | None, run_id: str | None) -> str:
    """The run report's path relative to the app root: ``runs/<dag_id>/<run_id>`` for Airflow runs (the
    same page as Airflow's "ReID report" tab), ``report?run=<run_key>`` otherwise."""
    if dag_id and run_id and run_key == f"{dag_id}/{run_id}":
        return f"runs/{quote(dag_id, safe='')}/{quote(run_id, safe='')}"
    return f"report?run={quote(run_key, safe='')}"


def results(store: ResultsStore, f: ResultFilters) -> dict[str, Any]:
    """Rows (newest first) matching ``f``, each with its Airflow run link; ``truncated``: more rows match
    than ``f.limit`` (one row more is fetched to tell)."""
    rows = read_results(store, f, limit=f.limit + 1)
    truncated = len(rows) > f.limit
    out = []
    for row in rows[: f.limit]:
        item = row.to_dict()
        item["airflow_run"] = airflow_run(row.dag_id, row.run_id)
        item["report_path"] = report_path(row.run_key, row.dag_id, row.run_id)
        out.append(item)
    return {"filters": f.as_query(), "count": len(out), "truncated": truncated, "results": out}


def results_csv(rows: Iterable[dict[str, Any]]) -> str:
    """CSV of result dicts: the RESULT_COLUMNS (units in the header) plus the Airflow dag and run ids."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow([f"{h} ({u})" if u else h for _, h, u in RESULT_COLUMNS] + ["Airflow DAG", "Airflow run"])
    for row in rows:
        run = row.get("airflow_run") or {}
        values = []
        for field, _, _ in RESULT_COLUMNS:
            value = row.get(field)
            values.append("" if value is None else _csv_safe(value))
        writer.writerow([*values, _csv_safe(run.get("dag_id", "")), _csv_safe(run.get("run_id", ""))])
    return buf.getvalue()


def _csv_safe(value: Any) -> Any:
    """Neutralise spreadsheet formula injection in text cells (OWASP: prefix with a quote)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def series(store: ResultsStore, sel: SeriesSelector) -> dict[str, Any]:
    """One metric's history with baseline, band and the alerts raised on it (chart markers)."""
    ser = read_series(store, sel)
    data = ser.to_dict()
    markers: list[dict[str, Any]] = []
    if ser.points:
        keys = {p.run_key for p in ser.points}
        markers = [
            alert_dict(a)
            for a in store.alerts(since=ser.points[0].started_at, metric=sel.metric, series_key=ser.series_key)
            if a.run_key in keys
        ]
    data["alerts"] = markers
    data["points"] = [
        {
            **p,
            "airflow_run": airflow_run(p["dag_id"], p["run_id"]),
            "report_path": report_path(p["run_key"], p["dag_id"], p["run_id"]),
        }
        for p in data["points"]
    ]
    return data


def alert_dict(a: AlertRecord) -> dict[str, Any]:
    """An alert as JSON, with ``open`` and its Airflow run link."""
    data = a.to_dict()
    data["open"] = a.open
    data["airflow_run"] = airflow_run(a.dag_id, a.run_id)
    return data


def alerts(store: ResultsStore, *, open_only: bool, since: datetime | None, limit: int) -> dict[str, Any]:
    items = [alert_dict(a) for a in store.alerts(open_only=open_only, since=since, limit=limit)]
    return {"count": len(items), "alerts": items}


def series_choices(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Distinct (target, device, batch, precision) of result rows, the one with the most rows first (the
    longest history shown by default), then in first-seen (newest) order; ``rows`` counts them."""
    seen: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        key = (r["target"], r.get("device_kind"), r["batch_size"], r["precision"])
        entry = seen.setdefault(
            key, {"target": key[0], "device_kind": key[1], "batch_size": key[2], "precision": key[3], "rows": 0}
        )
        entry["rows"] += 1
    return sorted(seen.values(), key=lambda c: -c["rows"])  # stable: ties keep first-seen order


#: The results page's table: the columns that matter first, so the table fits a 1440 px wide window inside
#: Airflow's navigation; every other column is in the row's detail (and in the CSV).
MAIN_COLUMNS: tuple[tuple[str, str, str], ...] = tuple(
    c
    for f in (
        "started_at",
        "run_key",
        "target",
        "batch_size",
        "precision",
        "throughput_best",
        "latency_p99_ms",
        "rank1",
        "mAP",
        "status",
    )
    for c in RESULT_COLUMNS
    if c[0] == f
)
_NOT_IN_DETAIL = {c[0] for c in MAIN_COLUMNS} | {"trigger"}  # trigger: shown inside the run cell


def detail_columns(rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """The other RESULT_COLUMNS, for the rows' detail: those with a value in some row (the CSV keeps all)."""
    return [c for c in RESULT_COLUMNS if c[0] not in _NOT_IN_DETAIL and any(r.get(c[0]) is not None for r in rows)]


# ---------------------------------------------------------------------------------------------- run report
#: Columns of the report's performance table: (field, header, unit).
REPORT_PERF_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("batch_size", "Batch", ""),
    ("throughput_best", "Throughput best", "samples/s"),
    ("throughput_median", "Throughput median", "samples/s"),
    ("latency_p50_ms", "Latency p50", "ms"),
    ("latency_p99_ms", "Latency p99", "ms"),
    ("card_throughput", "Card throughput", "samples/s"),
    ("e2e_throughput", "E2E throughput", "samples/s"),
    ("pure_throughput", "Pure throughput", "samples/s"),
)
ACCURACY_FIELDS = ("rank1", "rank5", "rank10", "mAP", "mINP", "rerank_rank1", "rerank_mAP")
_RUN_FIELDS_COMPARED = ("model_sha256", "onnx_sha256", "dataset_fingerprint", "config_overrides", "environment")


def run_report(store: ResultsStore, run_key: str, rules: RuleConfig) -> dict[str, Any]:
    """Everything about one run: performance by batch size per (target, device, precision) with the
    reference figures of ``rules`` (those the reference rule compares with) beside the rows that have one,
    accuracy and parity per artifact, failures, alerts, and what changed since the run before it.
    ``ResultsNotFound`` when the run is unknown."""
    run = store.get_run(run_key)
    rows = [r.to_dict() for r in store.results(run_key=run_key, limit=10_000)]
    groups: dict[tuple[str, str | None, str], dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: (r["target"], r.get("device_kind") or "", r["precision"], r["batch_size"])):
        if r.get("throughput_best") is None:
            continue
        key = (r["target"], r.get("device_kind"), r["precision"])
        group = groups.setdefault(
            key, {"target": key[0], "device_kind": key[1], "precision": key[2], "rows": [], "has_reference": False}
        )
        ref = rules.reference_for(r["target"], r.get("device_kind") or "", int(r["batch_size"]), r["precision"])
        measured = r.get("card_throughput") or r.get("throughput_best")
        r["reference"] = ref
        r["vs_reference"] = measured / ref if ref and measured else None
        group["has_reference"] |= ref is not None
        group["rows"].append(r)
    for group in groups.values():  # the columns measured in this group (batch size always)
        group["columns"] = [
            c
            for c in REPORT_PERF_COLUMNS
            if c[0] == "batch_size" or any(r.get(c[0]) is not None for r in group["rows"])
        ]
    accuracy = [r for r in rows if any(r.get(f) is not None for f in ACCURACY_FIELDS)]
    return {
        "run": {**run.to_dict(), "airflow_run": airflow_run(run.dag_id, run.run_id)},
        "simulated": any(r.get("simulated") for r in rows),
        "environment": sorted(_flatten(run.environment, "").items()),
        "perf_groups": list(groups.values()),
        "accuracy": accuracy,
        "failures": [f.to_dict() for f in store.failures(run_key)],
        "alerts": [alert_dict(a) for a in store.alerts(run_key=run_key)],
        "changes": changes_since_previous(store, run),
    }


def changes_since_previous(store: ResultsStore, run: Any) -> dict[str, Any]:
    """What differs between ``run`` and the run of the same DAG (or of the CLI) started just before it:
    model and ONNX digests, dataset fingerprint, config overrides, environment; one entry per changed leaf."""
    previous = next(
        (
            r
            for r in store.runs(limit=500)
            if r.started_at < run.started_at and r.dag_id == run.dag_id and r.run_key != run.run_key
        ),
        None,
    )
    if previous is None:
        return {"previous": None, "diff": []}
    before, after = previous.to_dict(), run.to_dict()
    diff: list[dict[str, Any]] = []
    for field in _RUN_FIELDS_COMPARED:
        old, new = _flatten(before.get(field), field), _flatten(after.get(field), field)
        for key in sorted(old.keys() | new.keys()):
            if old.get(key) != new.get(key):
                diff.append({"key": key, "before": old.get(key), "after": new.get(key)})
    return {
        "previous": {
            "run_key": previous.run_key,
            "report_path": report_path(previous.run_key, previous.dag_id, previous.run_id),
        },
        "diff": diff,
    }


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    """Nested mappings as {"a.b.c": leaf} (an empty mapping has no leaves)."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value} if prefix else {}
