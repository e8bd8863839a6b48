"""JSON-able records passed between the pipeline steps, the DAG (XCom) and the results store.

Units: throughput in samples/s, latency in ms, accuracy (rank1/rank5/rank10/mAP/mINP) in percent
(0..100, not fractions), parity cosines in -1..1.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from ..errors import ResultsError
from ..hardware import collect_environment

__all__ = ["collect_environment"]  # re-exported: reid_tasks.results.collect_environment

TRIGGERS = ("scheduled", "manual", "cli")
RUN_KINDS = ("demo", "configured")
RUN_STATUSES = ("running", "success", "failed", "regressed")
FINAL_STATUSES = ("success", "failed")
MODES = ("real", "pure")

T = TypeVar("T")


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | str) -> datetime:
    """A tz-aware UTC datetime from a datetime (naive = UTC) or an ISO-8601 string."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ResultsError(f"not an ISO-8601 timestamp: {value!r}") from exc
    if not isinstance(value, datetime):
        raise ResultsError(f"expected a datetime, got {type(value).__name__}: {value!r}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _is_datetime(annotation: Any) -> bool:
    if annotation is datetime:
        return True
    return typing.get_origin(annotation) in (typing.Union, types.UnionType) and datetime in typing.get_args(annotation)


class _Record:
    """to_dict / from_dict for frozen dataclasses (datetimes as ISO strings, nested records as dicts)."""

    _NESTED: typing.ClassVar[dict[str, type]] = {}

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)

    @classmethod
    def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
        if not isinstance(data, Mapping):
            raise ResultsError(f"{cls.__name__}.from_dict: expected a mapping, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise ResultsError(f"{cls.__name__}.from_dict: unknown fields {unknown}; valid: {sorted(names)}")
        kwargs = {}
        for key, value in data.items():
            if value is not None and _is_datetime(hints.get(key)):
                value = as_utc(value)
            elif key in cls._NESTED and value is not None:  # type: ignore[attr-defined]
                value = [cls._NESTED[key].from_dict(v) for v in value]  # type: ignore[attr-defined]
            kwargs[key] = value
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ResultsError(f"{cls.__name__}.from_dict: {exc}") from exc


def _check_choice(cls: str, name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ResultsError(f"{cls}.{name}: {value!r} is not one of {list(allowed)}")


def _check_percent(cls: str, name: str, value: float | None) -> None:
    if value is not None and not 0.0 <= float(value) <= 100.0:
        raise ResultsError(f"{cls}.{name}: {value!r} is not a percentage in 0..100")


@dataclasses.dataclass(frozen=True)
class RunInfo(_Record):
    """One validation run. ``run_key`` is unique: ``<dag_id>/<run_id>`` for Airflow runs, any id otherwise.

    ``start_run`` with an existing key updates the run (an Airflow retry), never duplicates it.
    ``kind``: ``demo`` (synthetic data / demo weights) or ``configured`` (what the deployment configured).
    """

    run_key: str
    trigger: Literal["scheduled", "manual", "cli"] = "cli"
    dag_id: str | None = None
    run_id: str | None = None
    started_at: datetime = dataclasses.field(default_factory=utcnow)
    model_sha256: str | None = None
    onnx_sha256: str | None = None
    dataset_fingerprint: dict[str, Any] = dataclasses.field(default_factory=dict)
    config_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    environment: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: str = ""
    airflow_url: str | None = None
    kind: Literal["demo", "configured"] = "configured"

    def __post_init__(self) -> None:
        if not self.run_key or len(self.run_key) > 250:
            raise ResultsError(f"RunInfo.run_key must be 1..250 characters, got {self.run_key!r}")
        _check_choice("RunInfo", "trigger", self.trigger, TRIGGERS)
        _check_choice("RunInfo", "kind", self.kind, RUN_KINDS)
        object.__setattr__(self, "started_at", as_utc(self.started_at))

    @staticmethod
    def airflow_key(dag_id: str, run_id: str) -> str:
        """The run key of an Airflow DAG run."""
        return f"{dag_id}/{run_id}"


@dataclasses.dataclass(frozen=True)
class PerfRow(_Record):
    """Speed of one artifact (target x device kind x batch x precision) in one mode.

    mode: 'real' (the preprocessed dataset) or 'pure' (generated inputs, compute only).
    Throughput in samples/s (best and median of the repetitions), latency per batch in ms,
    ``card_throughput``: per-card figure where the target has one (Ascend: chip figure x chips per card).

    Identity (see ``series.identity_key``): ``model_sha256`` / ``dataset_fingerprint`` default to the run's;
    ``neck_feat`` / ``feat_norm`` the evaluation config; ``hardware`` the benchmark worker's
    (``reid_tasks.hardware.collect_hardware``) and ``tool_versions``. ``simulated``: numbers from test doubles
    (never a baseline). ``device_host``: the host of the leased device, where a fleet lease gave one.
    """

    target: str
    device_kind: str
    batch_size: int
    precision: str
    mode: Literal["real", "pure"]
    throughput_best: float
    throughput_median: float
    latency_mean_ms: float | None = None
    latency_p50_ms: float | None = None
    latency_p90_ms: float | None = None
    latency_p99_ms: float | None = None
    e2e_throughput: float | None = None
    card_throughput: float | None = None
    samples: int = 0
    repetitions: int = 1
    warmup: int = 0
    device_id: str | None = None
    tool_versions: dict[str, Any] = dataclasses.field(default_factory=dict)
    artifact_sha256: str | None = None
    simulated: bool = False
    hardware: dict[str, Any] = dataclasses.field(default_factory=dict)
    device_host: str | None = None
    model_sha256: str | None = None
    dataset_fingerprint: str | None = None
    neck_feat: str | None = None
    feat_norm: bool | None = None

    def __post_init__(self) -> None:
        _check_choice("PerfRow", "mode", self.mode, MODES)
        if int(self.batch_size) < 1:
            raise ResultsError(f"PerfRow.batch_size must be >= 1, got {self.batch_size!r}")
        if not self.target or not self.device_kind or not self.precision:
            raise ResultsError(f"PerfRow: target, device_kind and precision must be set: {self!r}")
        if self.device_id is not None and not isinstance(self.device_id, str):
            object.__setattr__(self, "device_id", str(self.device_id))


@dataclasses.dataclass(frozen=True)
class AccuracyRow(_Record):
    """Accuracy of one artifact on the dataset. rank1/rank5/rank10/mAP/mINP in percent (0..100).

    ``parity_*``: features of this artifact vs the PyTorch fp32 reference. ``flagged`` / ``flag_reason``:
    the artifact failed its parity check (e.g. a reduced-precision build below
    VALIDATION.PARITY.REDUCED_MIN_COSINE); the row is kept and shown, not dropped. ``parity_passed`` False:
    the parity gate failed (an alert of rule ``parity``, from ``parity_detail["checks"]``); None: not checked.
    Identity fields and ``simulated`` as in PerfRow.
    """

    target: str
    batch_size: int
    precision: str
    rank1: float
    rank5: float
    rank10: float
    mAP: float
    mINP: float
    valid_queries: int
    gallery_size: int
    feat_norm: bool = True
    re_ranking: bool = False
    parity_min_cosine: float | None = None
    parity_mean_cosine: float | None = None
    parity_max_abs_diff: float | None = None
    flagged: bool = False
    flag_reason: str | None = None
    simulated: bool = False
    parity_passed: bool | None = None
    parity_sample_size: int | None = None
    parity_detail: dict[str, Any] = dataclasses.field(default_factory=dict)
    calibration_fingerprint: str | None = None
    model_sha256: str | None = None
    dataset_fingerprint: str | None = None
    neck_feat: str | None = None

    def __post_init__(self) -> None:
        if int(self.batch_size) < 1:
            raise ResultsError(f"AccuracyRow.batch_size must be >= 1, got {self.batch_size!r}")
        for name in ("rank1", "rank5", "rank10", "mAP", "mINP"):
            _check_percent("AccuracyRow", name, getattr(self, name))


@dataclasses.dataclass(frozen=True)
class FailureRow(_Record):
    """An artifact that did not finish: the stage it failed in (convert, benchmark, evaluate, ...), the error,
    the tail of its log and the task attempt. ``recorded_at`` is set on rows read back from the store."""

    target: str
    batch_size: int
    precision: str
    stage: str
    message: str
    log_tail: str = ""
    attempt: int = 1
    recorded_at: datetime | None = None

    def __post_init__(self) -> None:
        if not self.target or not self.precision or not self.stage:
            raise ResultsError(f"FailureRow: target, precision and stage must be set: {self!r}")
        if int(self.batch_size) < 1:
            raise ResultsError(f"FailureRow.batch_size must be >= 1, got {self.batch_size!r}")


@dataclasses.dataclass(frozen=True)
class AlertRecord(_Record):
    """A stored regression alert. ``env_diff``: {field: [value in last good run, value now]}; for a
    change-point alert (``change_run`` set): {field: [value in the run before the change, at the change]}.

    ``dag_id`` / ``run_id``: the Airflow DAG run of the alert's run (None for runs outside Airflow).
    """

    id: int
    run_key: str
    rule: str
    metric: str
    series_key: str
    series: dict[str, Any]
    observed: float
    baseline: float | None
    threshold: float | None
    z: float | None
    message: str
    env_diff: dict[str, Any]
    created_at: datetime
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    dag_id: str | None = None
    run_id: str | None = None
    change_run: str | None = None
    level_before: float | None = None
    level_after: float | None = None
    p_value: float | None = None

    @property
    def open(self) -> bool:
        return self.acknowledged_at is None

    @property
    def rel_change(self) -> float | None:
        """(level after - level before) / |level before| of a change-point alert, else None."""
        if self.level_before is None or self.level_after is None or not self.level_before:
            return None
        return (self.level_after - self.level_before) / abs(self.level_before)


@dataclasses.dataclass(frozen=True)
class SeriesVerdict(_Record):
    """The outcome of one rule on one series: ``regressed`` True/False, or None = no verdict.

    ``baseline_runs``: the run keys of the points the verdict was judged against (same series identity).
    """

    rule: str
    metric: str
    series_key: str
    series: dict[str, Any]
    observed: float | None
    baseline: float | None
    threshold: float | None
    z: float | None
    regressed: bool | None
    history: int
    message: str
    baseline_runs: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class RunVerdict(_Record):
    """Result of ``ResultsStore.evaluate_run``: the stored alerts and every series' verdict.

    ``kind``: the run's kind (demo | configured, None before 0002); ``simulated_rows``: rows whose numbers came
    from test doubles; ``failures``: artifacts that did not finish.
    """

    run_key: str
    status: str
    alerts: list[AlertRecord]
    verdicts: list[SeriesVerdict]
    kind: str | None = None
    simulated_rows: int = 0
    failures: list[FailureRow] = dataclasses.field(default_factory=list)

    @property
    def regressed(self) -> bool:
        return bool(self.alerts)

    def summary_lines(self) -> list[str]:
        """Human-readable lines for a run summary: alerts first, then 'no verdict' lines, then a count."""
        lines = [f"ALERT [{a.rule}] {a.message}" for a in self.alerts]
        lines += [
            f"FAILED {f.target}/bs{f.batch_size}/{f.precision} at {f.stage} (attempt {f.attempt}): {f.message}"
            for f in self.failures
        ]
        if self.simulated_rows:
            lines.append(
                f"SIMULATED: {self.simulated_rows} result row(s) of this run come from test doubles, not real "
                "hardware; they are never a baseline nor checked against the published reference"
            )
        if self.kind == "demo":
            lines.append("DEMO run: synthetic data / demo weights, its own series (not the configured model)")
        lines += [f"no verdict: {v.message}" for v in self.verdicts if v.regressed is None]
        ok = sum(1 for v in self.verdicts if v.regressed is False)
        state = "" if self.status == "running" else f", status {self.status}"  # still running while checked
        lines.append(f"run {self.run_key}: {len(self.alerts)} alert(s), {ok} check(s) passed{state}")
        return lines


RunVerdict._NESTED = {"alerts": AlertRecord, "verdicts": SeriesVerdict, "failures": FailureRow}
