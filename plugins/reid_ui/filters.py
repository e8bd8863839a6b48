"""Query parameters of the pages and the API, validated once.

FastAPI ``Query`` types do the type and range checks; ``parse_*`` functions do what a type cannot
(names against a pattern, dates in either order, ISO dates or datetimes) and raise ``FilterError``
with the reason, which the app turns into a 422 (API) or a message above the table (pages).
Values only ever reach the database as bound parameters through the results store.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
PRECISION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,15}$")
METRICS = ("throughput", "latency_p99", "rank1", "mAP")
MODES = ("real", "pure")
MAX_BATCH = 4096
MAX_LIMIT = 5000
DEFAULT_LIMIT = 200


class FilterError(ValueError):
    """A filter value is invalid; ``field`` names the query parameter."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def detail(self) -> list[dict[str, Any]]:
        """FastAPI's 422 body shape, so clients handle both kinds of validation error alike."""
        return [{"loc": ["query", self.field], "msg": self.reason, "type": "value_error"}]


def parse_name(field: str, value: str | None, pattern: re.Pattern[str] = NAME_RE) -> str | None:
    if value is None or value == "":
        return None
    value = value.strip()
    if not pattern.fullmatch(value):
        raise FilterError(field, f"{value!r} is not a valid {field} (letters, digits, '_', '.', '-', ':')")
    return value


def parse_when(field: str, value: str | None, *, end: bool = False) -> datetime | None:
    """An ISO date (whole day; ``end`` = up to the end of that day) or ISO datetime, as aware UTC."""
    if value is None or value.strip() == "":
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime.combine(day, time.min, tzinfo=UTC)
            return moment + timedelta(days=1) - timedelta(microseconds=1) if end else moment
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise FilterError(field, f"{value!r} is not an ISO date (2024-05-31) or datetime") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class ResultFilters:
    """Filters of the results table (all optional), newest first, at most ``limit`` rows."""

    target: str | None = None
    device_kind: str | None = None
    batch_size: int | None = None
    precision: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = DEFAULT_LIMIT

    @classmethod
    def parse(
        cls,
        *,
        target: str | None = None,
        device_kind: str | None = None,
        batch_size: int | None = None,
        precision: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> ResultFilters:
        if batch_size is not None and not 1 <= batch_size <= MAX_BATCH:
            raise FilterError("batch_size", f"{batch_size} is outside 1..{MAX_BATCH}")
        if not 1 <= limit <= MAX_LIMIT:
            raise FilterError("limit", f"{limit} is outside 1..{MAX_LIMIT}")
        start = parse_when("since", since)
        stop = parse_when("until", until, end=True)
        if start and stop and start > stop:
            raise FilterError("until", f"until ({until}) is before since ({since})")
        return cls(
            target=parse_name("target", target),
            device_kind=parse_name("device_kind", device_kind),
            batch_size=batch_size,
            precision=parse_name("precision", precision, PRECISION_RE),
            since=start,
            until=stop,
            limit=limit,
        )

    def as_query(self) -> dict[str, str]:
        """The non-empty filters as query-string values (dates as ISO strings)."""
        out: dict[str, str] = {}
        for key, value in asdict(self).items():
            if value is None or (key == "limit" and value == DEFAULT_LIMIT):
                continue
            out[key] = value.isoformat() if isinstance(value, datetime) else str(value)
        return out


@dataclass(frozen=True)
class SeriesSelector:
    """One series: target x device kind x batch x precision (x mode for perf metrics)."""

    metric: str
    target: str
    batch_size: int
    precision: str
    device_kind: str | None = None
    mode: str = "real"
    limit: int = 100

    @classmethod
    def parse(
        cls,
        *,
        metric: str,
        target: str | None,
        batch_size: int | None,
        precision: str | None,
        device_kind: str | None = None,
        mode: str = "real",
        limit: int = 100,
    ) -> SeriesSelector:
        if metric not in METRICS:
            raise FilterError("metric", f"{metric!r} is not one of {list(METRICS)}")
        if mode not in MODES:
            raise FilterError("mode", f"{mode!r} is not one of {list(MODES)}")
        name = parse_name("target", target)
        if name is None:
            raise FilterError("target", "required for a series")
        prec = parse_name("precision", precision, PRECISION_RE)
        if prec is None:
            raise FilterError("precision", "required for a series")
        if batch_size is None:
            raise FilterError("batch_size", "required for a series")
        if not 1 <= batch_size <= MAX_BATCH:
            raise FilterError("batch_size", f"{batch_size} is outside 1..{MAX_BATCH}")
        if not 2 <= limit <= 1000:
            raise FilterError("limit", f"{limit} is outside 2..1000")
        return cls(
            metric=metric,
            target=name,
            batch_size=batch_size,
            precision=prec,
            device_kind=parse_name("device_kind", device_kind),
            mode=mode,
            limit=limit,
        )
