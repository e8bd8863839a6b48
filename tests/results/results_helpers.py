"""Helpers shared by the results tests (also imported by spawned writer processes)."""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime, timedelta

from reid_tasks.results import AccuracyRow, PerfRow, ResultsStore, RuleConfig, RunInfo

T0 = datetime(2025, 1, 1, 2, 0, tzinfo=UTC)


def perf_row(value: float, **kw) -> PerfRow:  # type: ignore[no-untyped-def]
    fields = dict(
        target="onnxruntime",
        device_kind="cpu",
        batch_size=16,
        precision="fp32",
        mode="real",
        throughput_best=value,
        throughput_median=value * 0.98,
        latency_p99_ms=16_000.0 / value,
        samples=19_281,
        repetitions=3,
        warmup=2,
        tool_versions={"onnxruntime": "1.32.0"},
    )
    fields.update(kw)
    return PerfRow(**fields)


def acc_row(rank1: float = 94.5, mAP: float = 85.9, **kw) -> AccuracyRow:  # type: ignore[no-untyped-def]
    fields = dict(
        target="onnxruntime",
        batch_size=16,
        precision="fp32",
        rank1=rank1,
        rank5=98.0,
        rank10=98.9,
        mAP=mAP,
        mINP=60.1,
        valid_queries=3368,
        gallery_size=15913,
    )
    fields.update(kw)
    return AccuracyRow(**fields)


ENV = {"host": "ci-1", "python": "3.11.2", "onnxruntime": "1.32.0", "torch": "2.13.0"}


def record_run(
    store: ResultsStore,
    key: str,
    day: float,
    perf: list[PerfRow] = (),  # type: ignore[assignment]
    acc: list[AccuracyRow] = (),  # type: ignore[assignment]
    *,
    env: dict | None = None,
    status: str = "success",
    rules: RuleConfig | None = None,
    evaluate: bool = True,
):  # type: ignore[no-untyped-def]
    """Record a whole run (start, rows, finish, evaluate) started ``day`` days after T0."""
    store.start_run(
        RunInfo(
            run_key=key,
            trigger="scheduled",
            started_at=T0 + timedelta(days=day),
            model_sha256="a" * 64,
            onnx_sha256="b" * 64,
            dataset_fingerprint={"query": 3368, "gallery": 15913, "hash": "f00d"},
            environment=dict(ENV if env is None else env),
        )
    )
    for row in perf:
        store.record_perf(key, row)
    for row in acc:
        store.record_accuracy(key, row)
    store.finish_run(key, status, finished_at=T0 + timedelta(days=day, hours=1))
    return store.evaluate_run(key, rules or RuleConfig.from_cfg()) if evaluate else None


# ---------------------------------------------------------------------- spawned writer processes
def concurrent_writer(url: str, run_key: str, worker: int, rows: int, barrier) -> int:  # type: ignore[no-untyped-def]
    """One of N writers of one run: upserts the run, then records ``rows`` perf rows of its own series
    plus one row every writer records (same key: must end up once)."""
    store = ResultsStore.open(url)
    barrier.wait(timeout=120)
    store.start_run(RunInfo(run_key=run_key, trigger="manual", started_at=T0))
    for i in range(rows):
        store.record_perf(run_key, perf_row(1000.0 + i, target=f"t{worker}", batch_size=i + 1))
    store.record_perf(run_key, perf_row(2000.0 + worker, target="shared"))
    store.record_accuracy(run_key, acc_row(target=f"t{worker}"))
    store.close()
    return worker


def killed_writer(url: str, run_key: str, ready) -> None:  # type: ignore[no-untyped-def]
    """Starts a run, records one row, then sits inside an open write transaction until killed."""
    from sqlalchemy import text

    store = ResultsStore.open(url)
    store.start_run(RunInfo(run_key=run_key, trigger="manual", started_at=T0 + timedelta(days=30)))
    store.record_perf(run_key, perf_row(1000.0))
    with store.engine.begin() as conn:
        conn.execute(
            text("UPDATE validation_runs SET status = 'success', notes = 'half-written' WHERE run_key = :k"),
            {"k": run_key},
        )
        conn.execute(text("UPDATE perf_results SET throughput_best = 1.0"))
        ready.set()
        time.sleep(600)


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
