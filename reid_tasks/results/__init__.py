"""Results history database and regression alerts.

Layers (Conbench's split): ``models`` (SQLAlchemy tables) and ``migrations`` (Alembic), ``rules`` (pure
statistics, no database), ``store`` (transactions, queries; calls the rules), ``cli`` and ``plot`` at the
edge. Records passed around (XCom included) are the frozen dataclasses below, each with
``to_dict()`` / ``from_dict()``.

Units: throughput samples/s, latency ms, accuracy in percent (0..100).
"""

from __future__ import annotations

from .records import (
    AccuracyRow,
    AlertRecord,
    PerfRow,
    ResultRow,
    RunInfo,
    RunVerdict,
    Series,
    SeriesPoint,
    SeriesVerdict,
    collect_environment,
)
from .rules import METRICS, RuleConfig
from .store import ResultsStore, RunRecord, series_key
from .urls import normalize_url, resolve_url

__all__ = [
    "METRICS",
    "AccuracyRow",
    "AlertRecord",
    "PerfRow",
    "ResultRow",
    "ResultsStore",
    "RuleConfig",
    "RunInfo",
    "RunRecord",
    "RunVerdict",
    "Series",
    "SeriesPoint",
    "SeriesVerdict",
    "collect_environment",
    "normalize_url",
    "resolve_url",
    "series_key",
]
