"""The store's result rows and series for the filters the CLI and the plugin take: one translation for both.

``ResultQuery`` / ``SeriesQuery`` are what either side parses its input into (the plugin's ResultFilters /
SeriesSelector, the CLI's argparse namespace); ``read_results`` / ``read_series`` hand them to the store.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .rule_config import RuleConfig
    from .store import ResultsStore
    from .views import ResultRow, Series


class ResultQuery(Protocol):
    """Filters of result rows (the plugin's ResultFilters, the CLI's ``results`` arguments)."""

    target: str | None
    device_kind: str | None
    batch_size: int | None
    precision: str | None
    since: datetime | None
    until: datetime | None
    limit: int


class SeriesQuery(Protocol):
    """One metric of one series (the plugin's SeriesSelector, the CLI's ``history`` arguments)."""

    metric: str
    target: str
    batch_size: int
    precision: str
    device_kind: str | None
    mode: str
    limit: int


def read_results(
    store: ResultsStore, q: ResultQuery, *, run_key: str | None = None, limit: int | None = None
) -> list[ResultRow]:
    """``store.results`` filtered by ``q`` (and ``run_key``), at most ``limit`` rows (None: ``q.limit``)."""
    return store.results(
        run_key=run_key,
        target=q.target,
        device_kind=q.device_kind,
        batch_size=q.batch_size,
        precision=q.precision,
        limit=q.limit if limit is None else limit,
        since=q.since,
        until=q.until,
    )


def read_series(
    store: ResultsStore, q: SeriesQuery, *, re_ranking: bool = False, rule_config: RuleConfig | None = None
) -> Series:
    """``store.series`` of the series ``q`` names (``re_ranking``: the re-ranked accuracy series)."""
    return store.series(
        q.metric,
        q.target,
        q.batch_size,
        precision=q.precision,
        device_kind=q.device_kind,
        mode=q.mode,
        re_ranking=re_ranking,
        limit=q.limit,
        rule_config=rule_config,
    )
