"""Results history database and regression alerts.

Layers (Conbench's split): ``models`` (SQLAlchemy tables) and ``migrations`` (Alembic); ``engine``
(connections, transactions) and ``store`` (reads and writes rows) with ``queries`` (the SQL feeding the
rules and charts); ``series``, ``rule_config``, ``rules`` and ``evaluation`` (pure: what a series is, the
metrics and thresholds, the rules, applying them to a run's observations); ``views`` (the rows the CLI and
plugin render); ``cli`` and ``plot`` at the edge.
Records passed around (XCom included) are the frozen dataclasses below, each with ``to_dict()`` /
``from_dict()``.

Units: throughput samples/s, latency ms, accuracy in percent (0..100).
"""

from __future__ import annotations

from .records import (
    AccuracyRow,
    AlertRecord,
    FailureRow,
    PerfRow,
    RunInfo,
    RunVerdict,
    SeriesVerdict,
    collect_environment,
)
from .rule_config import METRICS, RuleConfig
from .series import series_key
from .store import ResultsStore
from .urls import normalize_url, resolve_url
from .views import ResultRow, RunRecord, Series, SeriesPoint

__all__ = [
    "METRICS",
    "AccuracyRow",
    "AlertRecord",
    "FailureRow",
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
