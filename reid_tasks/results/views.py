"""What the CLI and the plugin render, built from stored rows (no session, no SQL).

Records: ``RunRecord`` (a run), ``ResultRow`` (a run x artifact, perf and accuracy side by side), ``Series`` /
``SeriesPoint`` (one metric's history with its baseline band) with ``ChangeMark`` / ``BaselineMark`` (chart
markers).

``run_record`` / ``alert_record``: one stored run / alert as a record; ``merge_rows``: perf and accuracy of
runs side by side, one row per run x (target, device kind, batch, precision); ``build_series``: one metric's
points with the baseline and alert band the next run is judged against. The store reads behind them, for
the filters the CLI and the plugin take, are in ``reads``.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from . import rules
from .evaluation import accuracy_detector, perf_detector
from .records import AlertRecord, FailureRow, _Record
from .rule_config import RuleConfig
from .series import series_key

R = TypeVar("R")


@dataclasses.dataclass(frozen=True)
class RunRecord(_Record):
    """A stored run: its RunInfo fields plus status and finish time."""

    run_key: str
    trigger: str
    dag_id: str | None
    run_id: str | None
    airflow_url: str | None
    started_at: datetime
    finished_at: datetime | None
    status: str
    model_sha256: str | None
    onnx_sha256: str | None
    dataset_fingerprint: dict[str, Any]
    config_overrides: dict[str, Any]
    environment: dict[str, Any]
    notes: str
    kind: str | None = None
    disk_bytes: int | None = None


@dataclasses.dataclass(frozen=True)
class ResultRow(_Record):
    """One run x series (target, device kind, batch, precision) with perf and accuracy side by side.

    Perf columns come from the 'real' mode row (``pure_throughput`` from the 'pure' one); accuracy from the
    row without re-ranking (``rerank_rank1`` / ``rerank_mAP`` from the re-ranked one). Accuracy in percent.
    ``dag_id`` / ``run_id``: the run's Airflow DAG run (None for runs outside Airflow). ``run_kind``: demo |
    configured (None: recorded before 0002); ``simulated``: any of its numbers came from test doubles;
    ``parity_passed``: False when the parity gate failed; ``failed_stage`` / ``failure_message``: the artifact
    did not finish (a failure row, no numbers). ``run_disk_bytes``: bytes under the run's directory when it
    finished (its share of shared caches not counted).
    """

    run_key: str
    status: str
    trigger: str
    started_at: datetime
    target: str
    device_kind: str | None
    batch_size: int
    precision: str
    device: str | None = None  # where the 'real' benchmark ran: "host:id" of a leased device, else the host
    throughput_best: float | None = None
    throughput_median: float | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    e2e_throughput: float | None = None
    card_throughput: float | None = None
    pure_throughput: float | None = None
    rank1: float | None = None
    rank5: float | None = None
    rank10: float | None = None
    mAP: float | None = None
    mINP: float | None = None
    rerank_rank1: float | None = None
    rerank_mAP: float | None = None
    flagged: bool | None = None
    open_alerts: int = 0
    dag_id: str | None = None
    run_id: str | None = None
    run_kind: str | None = None
    simulated: bool = False
    parity_passed: bool | None = None
    failed_stage: str | None = None
    failure_message: str | None = None
    run_disk_bytes: int | None = None


@dataclasses.dataclass(frozen=True)
class SeriesPoint(_Record):
    """One run's value of a series; ``good``: it serves as a baseline (a good run, real numbers).
    ``dag_id`` / ``run_id`` as in ResultRow; ``simulated``: the value came from test doubles."""

    run_key: str
    started_at: datetime
    value: float
    status: str
    good: bool
    dag_id: str | None = None
    run_id: str | None = None
    simulated: bool = False


@dataclasses.dataclass(frozen=True)
class ChangeMark(_Record):
    """A change point found on a series: the run where the level changed, the levels before / from it on,
    the relative change and p-value, the alerts that named it and whether it was accepted (acknowledged)."""

    run_key: str
    started_at: datetime | None
    level_before: float | None
    level_after: float | None
    rel_change: float | None
    p_value: float | None
    alert_ids: list[int]
    accepted: bool


@dataclasses.dataclass(frozen=True)
class BaselineMark(_Record):
    """An accepted baseline: from run ``run_key`` on, the series' ``metric`` is judged only against runs from
    that run on (``alert_id``: the acknowledged change-point alert)."""

    series_key: str
    metric: str
    run_key: str
    started_at: datetime
    alert_id: int | None
    accepted_by: str | None
    accepted_at: datetime
    identity_key: str | None = None


@dataclasses.dataclass(frozen=True)
class Series(_Record):
    """History of one metric of one series, oldest point first, with the baseline the next run is compared to.

    ``band``: (lower, upper) values that do not raise an alert for the next run (None where unbounded);
    ``method`` says how: ``change_point`` (the level = median of the recent runs since the accepted
    baseline; a change worse than CHANGE_MIN_EFFECT (perf) / HISTORY_ACC_DROP pt (accuracy) alerts once
    confirmed), ``perf_history`` while a perf series is too short for change-point detection (the z-score
    band widened to PERF_MIN_CHANGE), ``perf_reference``, ``accuracy_history`` or ``none``.
    ``change_points`` / ``baselines``: the change points alerts named and the accepted baselines (chart
    markers), oldest first.
    """

    metric: str
    unit: str
    higher_is_better: bool
    series_key: str
    series: dict[str, Any]
    points: list[SeriesPoint]
    baseline: float | None
    std: float | None
    threshold: float | None
    band: tuple[float | None, float | None]
    method: str
    change_points: list[ChangeMark] = dataclasses.field(default_factory=list)
    baselines: list[BaselineMark] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        object.__setattr__(self, "band", tuple(self.band))


Series._NESTED = {"points": SeriesPoint, "change_points": ChangeMark, "baselines": BaselineMark}


def _from_stored(cls: type[R], stored: Any, **given: Any) -> R:
    """A ``cls`` record whose fields are the stored row's attributes of the same names, but for those ``given``."""
    read = {f.name: getattr(stored, f.name) for f in dataclasses.fields(cls) if f.name not in given}  # type: ignore[arg-type]
    return cls(**read, **given)


def run_record(run: Any) -> RunRecord:
    """A stored ValidationRun as a RunRecord."""
    return _from_stored(
        RunRecord,
        run,
        dataset_fingerprint=dict(run.dataset_fingerprint or {}),
        config_overrides=dict(run.config_overrides or {}),
        environment=dict(run.environment or {}),
        notes=run.notes or "",
    )


def failure_row(f: Any) -> FailureRow:
    """A stored Failure as a FailureRow (with its recorded_at)."""
    return _from_stored(FailureRow, f)


def alert_record(a: Any, run_key: str, dag_id: str | None, run_id: str | None) -> AlertRecord:
    """A stored Alert (with its run's key and Airflow dag_id / run_id) as an AlertRecord."""
    return _from_stored(
        AlertRecord,
        a,
        run_key=run_key,
        dag_id=dag_id,
        run_id=run_id,
        series=dict(a.series or {}),
        env_diff=dict(a.env_diff or {}),
        change_run=a.change_run.run_key if a.change_run is not None else None,
    )


def merge_rows(
    runs: Sequence[Any],
    perf: Iterable[Any],
    acc: Iterable[Any],
    open_alerts: Mapping[int, int],
    failures: Iterable[Any] = (),
) -> list[ResultRow]:
    """Stored runs and their perf / accuracy / failure rows as ResultRows, newest run first. Perf columns come
    from the 'real' mode row (``pure_throughput`` from the 'pure' one); accuracy is shown beside each device
    kind; a failed artifact is a row of its own (no device kind, no numbers)."""
    perf, acc = list(perf), list(acc)
    by_run = {r.id: r for r in runs}
    cells: dict[tuple[int, str, int, str, str | None], dict[str, Any]] = {}
    kinds: dict[tuple[int, str, int, str], set[str]] = {}
    for p in perf:
        kinds.setdefault((p.run_pk, p.target, p.batch_size, p.precision), set()).add(p.device_kind)
    for p in perf:
        cell = cells.setdefault((p.run_pk, p.target, p.batch_size, p.precision, p.device_kind), {})
        if p.mode == "pure":
            cell["pure_throughput"] = p.throughput_best
        if p.mode == "real" or "throughput_best" not in cell:
            cell.update(
                device=_device_label(p.device_host, p.device_id),
                throughput_best=p.throughput_best if p.mode == "real" else None,
                throughput_median=p.throughput_median if p.mode == "real" else None,
                latency_p50_ms=p.latency_p50_ms,
                latency_p99_ms=p.latency_p99_ms,
                e2e_throughput=p.e2e_throughput,
                card_throughput=p.card_throughput,
            )
        if p.simulated:
            cell["simulated"] = True
    for a in acc:
        devs: set[str | None] = set(kinds.get((a.run_pk, a.target, a.batch_size, a.precision)) or {None})
        for dev in devs:  # accuracy does not depend on the device kind: shown beside each perf row
            cell = cells.setdefault((a.run_pk, a.target, a.batch_size, a.precision, dev), {})
            if a.re_ranking:
                cell.update(rerank_rank1=a.rank1, rerank_mAP=a.mAP)
            else:
                cell.update(rank1=a.rank1, rank5=a.rank5, rank10=a.rank10, mAP=a.mAP, mINP=a.mINP, flagged=a.flagged)
            if a.flagged:
                cell["flagged"] = True
            if a.simulated:
                cell["simulated"] = True
            if a.parity_passed is not None and cell.get("parity_passed") is not False:
                cell["parity_passed"] = a.parity_passed
    for f in failures:
        cell = cells.setdefault((f.run_pk, f.target, f.batch_size, f.precision, None), {})
        cell.update(failed_stage=f.stage, failure_message=f.message)
    out = []
    for (run_pk, target, batch, precision, dev), cell in cells.items():
        run = by_run[run_pk]
        out.append(
            ResultRow(
                run_key=run.run_key,
                status=run.status,
                trigger=run.trigger,
                started_at=run.started_at,
                target=target,
                device_kind=dev,
                batch_size=batch,
                precision=precision,
                open_alerts=open_alerts.get(run_pk, 0),
                dag_id=run.dag_id,
                run_id=run.run_id,
                run_kind=run.kind,
                run_disk_bytes=run.disk_bytes,
                **cell,
            )
        )
    out.sort(
        key=lambda r: (-r.started_at.timestamp(), r.run_key, r.target, r.device_kind or "", r.batch_size, r.precision)
    )
    return out


def build_series(
    metric: str,
    ser: dict[str, Any],
    points: list[SeriesPoint],
    good: list[float],
    reference: float | None,
    cfg: RuleConfig,
    since: datetime | None = None,
) -> Series:
    """One metric's points and the baseline / band the next run is judged against (``good``: the baseline
    values, newest first; ``since``: the accepted baseline's start)."""
    spec = rules.metric_spec(metric)
    baseline = std = threshold = None
    band: tuple[float | None, float | None] = (None, None)
    method = "none"
    detector = perf_detector(cfg) if spec.kind == "perf" else accuracy_detector(cfg)
    recent = [p.value for p in points if not p.simulated and (since is None or p.started_at >= since)]
    recent = recent[-detector.window :]
    if recent and detector.ready(len(recent) + 1):
        baseline, method = statistics.median(recent), "change_point"
        margin = detector.min_effect * abs(baseline) if detector.relative else detector.min_effect
        threshold = baseline - spec.sign * margin
        band = (threshold, None) if spec.higher_is_better else (None, threshold)
    elif spec.kind == "perf":
        if len(good) >= max(cfg.perf_min_history, 2):
            mean, std, lo, hi = rules.perf_band(good, cfg.perf_z, cfg.perf_min_change)
            baseline, band, method = mean, (lo, hi), "perf_history"
            threshold = lo if spec.higher_is_better else hi
        elif reference is not None:
            baseline, method = reference, "perf_reference"
            threshold = reference * (1 - cfg.ref_perf_tolerance)
            band = (threshold, None)
    elif good:
        baseline, method = statistics.median(good), "accuracy_history"
        threshold = baseline - cfg.history_acc_drop
        band = (threshold, None)
    return Series(
        metric=metric,
        unit=spec.unit,
        higher_is_better=spec.higher_is_better,
        series_key=series_key(ser),
        series=ser,
        points=points,
        baseline=baseline,
        std=std,
        threshold=threshold,
        band=band,
        method=method,
    )


def _device_label(host: str | None, device_id: str | None) -> str | None:
    """``host:id`` of a leased device (device 0 on two hosts are two devices), the host alone for CPU targets."""
    if host is None:
        return None if device_id is None else str(device_id)
    return host if device_id is None else f"{host}:{device_id}"
