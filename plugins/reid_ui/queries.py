"""The UI's questions, answered by ``reid_tasks.results.ResultsStore`` (no SQL here).

Every function takes an open store and validated filters (``filters.py``) and returns JSON-able dicts,
so the pages, the JSON API and the CSV export show the same numbers. The store filters in SQL and puts
each run's Airflow dag_id / run_id on its rows, points and alerts, so a request costs a fixed number of
queries whatever the number of rows.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from urllib.parse import quote

from reid_tasks.results import AlertRecord, ResultsStore

from .filters import ResultFilters, SeriesSelector

# Columns of the results table and the CSV export, in order: (field, header, unit).
RESULT_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("started_at", "Started (UTC)", ""),
    ("run_key", "Run", ""),
    ("status", "Status", ""),
    ("trigger", "Trigger", ""),
    ("target", "Target", ""),
    ("device_kind", "Device", ""),
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


def results(store: ResultsStore, f: ResultFilters) -> dict[str, Any]:
    """Rows (newest first) matching ``f``, each with its Airflow run link; ``truncated``: more rows match
    than ``f.limit`` (one row more is fetched to tell)."""
    rows = store.results(
        target=f.target,
        device_kind=f.device_kind,
        batch_size=f.batch_size,
        precision=f.precision,
        since=f.since,
        until=f.until,
        limit=f.limit + 1,
    )
    truncated = len(rows) > f.limit
    out = []
    for row in rows[: f.limit]:
        item = row.to_dict()
        item["airflow_run"] = airflow_run(row.dag_id, row.run_id)
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
    ser = store.series(
        sel.metric,
        sel.target,
        sel.batch_size,
        precision=sel.precision,
        device_kind=sel.device_kind,
        mode=sel.mode,
        limit=sel.limit,
    )
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
    data["points"] = [{**p, "airflow_run": airflow_run(p["dag_id"], p["run_id"])} for p in data["points"]]
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


IDENTITY_COLUMNS = ("started_at", "run_key", "status", "target", "device_kind", "batch_size", "precision")
ALWAYS_SHOWN = {*IDENTITY_COLUMNS, "open_alerts"}
PAGE_HIDDEN = {"trigger"}  # shown inside the run cell on the page


def visible_columns(rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """RESULT_COLUMNS for the page: without measurement columns empty in every row (the CSV keeps all)."""
    return [
        c
        for c in RESULT_COLUMNS
        if c[0] not in PAGE_HIDDEN and (c[0] in ALWAYS_SHOWN or any(r.get(c[0]) is not None for r in rows))
    ]
