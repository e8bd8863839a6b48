"""A small, deterministic results history for the plugin tests (and the browser test's server).

Eight nightly Airflow runs of ``reid_validation`` on onnxruntime/cpu, batch 1 and 16, fp32: steady
throughput and accuracy for seven nights, then a 20 % throughput drop at batch 16 on the last night,
which the real rules turn into an alert. Plus one CLI run (no Airflow link).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from reid_tasks.results import AccuracyRow, PerfRow, ResultsStore, RunInfo

DAG_ID = "reid_validation"
NIGHTS = 8
FIRST_NIGHT = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)
THROUGHPUT = {1: 210.0, 16: 400.0}
NOISE = (0.4, -0.3, 0.2, -0.5, 0.1, 0.3, -0.2)  # percent, nights 1..7
CLI_RUN_KEY = "local-20261109"


def run_id(night: int) -> str:
    return f"scheduled__{(FIRST_NIGHT + timedelta(days=night)).isoformat()}"


def run_key(night: int) -> str:
    return RunInfo.airflow_key(DAG_ID, run_id(night))


def _record(store: ResultsStore, key: str, started: datetime, factor: dict[int, float], env: dict) -> None:
    for batch, base in THROUGHPUT.items():
        tp = base * factor[batch]
        store.record_perf(
            key,
            PerfRow(
                target="onnxruntime",
                device_kind="cpu",
                batch_size=batch,
                precision="fp32",
                mode="real",
                throughput_best=tp,
                throughput_median=tp * 0.98,
                latency_mean_ms=1000.0 * batch / tp,
                latency_p50_ms=1000.0 * batch / tp,
                latency_p99_ms=1000.0 * batch / tp * 1.2,
                samples=1000,
                repetitions=3,
            ),
        )
        store.record_accuracy(
            key,
            AccuracyRow(
                target="onnxruntime",
                batch_size=batch,
                precision="fp32",
                rank1=94.42,
                rank5=98.1,
                rank10=98.9,
                mAP=85.81,
                mINP=59.3,
                valid_queries=3368,
                gallery_size=15913,
                parity_min_cosine=0.99999,
                parity_mean_cosine=0.999995,
                parity_max_abs_diff=2e-5,
            ),
        )


def seed(url: str) -> dict[str, object]:
    """Fill the results database at ``url``; returns what the tests assert on."""
    with ResultsStore.open(url, migrate=True) as store:
        for night in range(NIGHTS):
            started = FIRST_NIGHT + timedelta(days=night)
            key = run_key(night)
            last = night == NIGHTS - 1
            env = {"host": "bench-1", "onnxruntime": "1.32.0" if not last else "1.33.0"}
            store.start_run(
                RunInfo(
                    run_key=key,
                    trigger="scheduled",
                    dag_id=DAG_ID,
                    run_id=run_id(night),
                    started_at=started,
                    environment=env,
                )
            )
            noise = 1.0 + (NOISE[night] / 100.0 if not last else 0.0)
            factor = {1: noise, 16: 0.8 if last else noise}
            _record(store, key, started, factor, env)
            store.finish_run(key, "success", finished_at=started + timedelta(minutes=40))
            store.evaluate_run(key)
        cli_start = FIRST_NIGHT + timedelta(days=NIGHTS, hours=3)
        store.start_run(RunInfo(run_key=CLI_RUN_KEY, trigger="cli", started_at=cli_start))
        store.record_perf(
            CLI_RUN_KEY,
            PerfRow(
                target="openvino",
                device_kind="cpu",
                batch_size=1,
                precision="int8",
                mode="real",
                throughput_best=350.0,
                throughput_median=340.0,
                latency_p99_ms=3.4,
            ),
        )
        store.finish_run(CLI_RUN_KEY, "success", finished_at=cli_start + timedelta(minutes=5))
        alerts = store.alerts()
    return {"alerts": alerts, "last_key": run_key(NIGHTS - 1), "rows": 2 * NIGHTS + 1}
