"""Results database speed on PostgreSQL: one series' last 100 points and the rule evaluation of a new run
against a history of 100,000 perf rows; goal < 50 ms each. Also the same without the series index.

    .venv/bin/python benchmarks/bench_results.py [--host 127.0.0.1] [--port 5432] [--user postgres]
        [--rows 100000] [--series 50] [--repeats 20]

Creates a throwaway database, fills it with bulk inserts, prints median timings in ms, drops it.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
from sqlalchemy import insert, select, text

from reid_tasks.results import AccuracyRow, PerfRow, ResultsStore, RuleConfig, RunInfo
from reid_tasks.results.models import PerfResult, ValidationRun

GOAL_MS = 50.0
T0 = datetime(2020, 1, 1, tzinfo=UTC)
TARGETS = ("onnxruntime", "openvino", "tensorrt", "pytorch", "ascend310")
BATCHES = (1, 4, 8, 16, 32)
PRECISIONS = ("fp32", "fp16")


def _series(n: int) -> list[tuple[str, str, int, str]]:
    out = [(t, "Ascend310" if t == "ascend310" else "cpu", b, p) for t in TARGETS for b in BATCHES for p in PRECISIONS]
    if n > len(out):
        raise SystemExit(f"--series at most {len(out)}")
    return out[:n]


def fill(store: ResultsStore, rows: int, series: list[tuple[str, str, int, str]]) -> int:
    """Bulk-insert rows // len(series) good runs, each with one perf row per series. Returns the run count."""
    runs = rows // len(series)
    rng = random.Random(0)
    with store.engine.begin() as conn:
        run_values = [
            {
                "run_key": f"hist/{i:06d}",
                "trigger": "scheduled",
                "started_at": T0 + timedelta(hours=i),
                "finished_at": T0 + timedelta(hours=i, minutes=30),
                "status": "success",
                "dataset_fingerprint": {"query": 3368, "gallery": 15913},
                "config_overrides": {},
                "environment": {"host": "bench", "onnxruntime": "1.32.0"},
                "notes": "",
                "updated_at": T0,
            }
            for i in range(runs)
        ]
        conn.execute(insert(ValidationRun), run_values)
        ids = dict(conn.execute(select(ValidationRun.run_key, ValidationRun.id)).all())
        batch: list[dict] = []
        for i in range(runs):
            run_pk = ids[f"hist/{i:06d}"]
            started = T0 + timedelta(hours=i)
            for t, kind, b, p in series:
                base = 100.0 * b**0.5
                batch.append(
                    {
                        "run_id": run_pk,
                        "run_started_at": started,
                        "target": t,
                        "device_kind": kind,
                        "batch_size": b,
                        "precision": p,
                        "mode": "real",
                        "throughput_best": base * (1 + rng.gauss(0, 0.01)),
                        "throughput_median": base,
                        "latency_p99_ms": 1000.0 * b / base * (1 + rng.gauss(0, 0.01)),
                        "samples": 19281,
                        "repetitions": 3,
                        "warmup": 2,
                        "tool_versions": {"runtime": "1.0"},
                        "recorded_at": started,
                    }
                )
            if len(batch) >= 10_000:
                conn.execute(insert(PerfResult.__table__), batch)
                batch = []
        if batch:
            conn.execute(insert(PerfResult.__table__), batch)
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))
    return runs


def new_run(store: ResultsStore, runs: int, series: list[tuple[str, str, int, str]], n_perf: int) -> str:
    key = "bench/new"
    store.start_run(RunInfo(run_key=key, trigger="manual", started_at=T0 + timedelta(hours=runs + 1),
                            environment={"host": "bench", "onnxruntime": "1.33.0"}))  # fmt: skip
    for t, kind, b, p in series[:n_perf]:
        base = 100.0 * b**0.5
        value = base * (0.85 if t == "onnxruntime" else 1.0)  # one target regressed
        store.record_perf(key, PerfRow(t, kind, b, p, "real", value, value, latency_p99_ms=1000.0 * b / value))
    for b in (1, 16):
        store.record_accuracy(key, AccuracyRow("onnxruntime", b, "fp32", 94.5, 98.0, 98.9, 85.9, 60.0, 3368, 15913))
    store.finish_run(key)
    return key


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm caches and the connection pool
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def last_100_query(store: ResultsStore, t: str, kind: str, b: int, p: str) -> Callable[[], list]:
    q = (
        select(PerfResult.run_started_at, PerfResult.throughput_best)
        .join(ValidationRun, PerfResult.run_pk == ValidationRun.id)
        .where(
            PerfResult.target == t,
            PerfResult.device_kind == kind,
            PerfResult.batch_size == b,
            PerfResult.precision == p,
            PerfResult.mode == "real",
            ValidationRun.status == "success",
        )
        .order_by(PerfResult.run_started_at.desc())
        .limit(100)
    )

    def run() -> list:
        with store.engine.connect() as conn:
            return conn.execute(q).all()

    return run


def measure(store: ResultsStore, key: str, probe: tuple[str, str, int, str], repeats: int) -> dict[str, float]:
    t, kind, b, p = probe
    cfg = RuleConfig.from_cfg()
    return {
        "last 100 points (one query)": median_ms(last_100_query(store, t, kind, b, p), repeats),
        "store.series() (points + baseline)": median_ms(
            lambda: store.series("throughput", t, b, precision=p, device_kind=kind, rule_config=cfg), repeats
        ),
        "evaluate_run(new run)": median_ms(lambda: store.evaluate_run(key, cfg), repeats),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5432)
    ap.add_argument("--user", default=None, help="default: postgres, else root")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--series", type=int, default=50)
    ap.add_argument("--new-run-series", type=int, default=8, help="perf rows of the evaluated run")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args(argv)

    user = args.user
    for candidate in [user] if user else ["postgres", "root"]:
        try:
            psycopg.connect(host=args.host, port=args.port, user=candidate, dbname="postgres").close()
            user = candidate
            break
        except psycopg.Error as exc:
            err = exc
    else:
        print(f"PostgreSQL at {args.host}:{args.port} unreachable: {err}", file=sys.stderr)
        return 2
    dbname = f"reid_results_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(host=args.host, port=args.port, user=user, dbname="postgres", autocommit=True)
    admin.execute(f'CREATE DATABASE "{dbname}"')
    store = None
    try:
        url = f"postgresql+psycopg://{user}@{args.host}:{args.port}/{dbname}"
        store = ResultsStore.open(url, migrate=True)
        series = _series(args.series)
        t0 = time.perf_counter()
        runs = fill(store, args.rows, series)
        n_rows = runs * len(series)
        print(f"filled {n_rows:,} perf rows ({runs:,} runs x {len(series)} series) in {time.perf_counter() - t0:.1f} s")
        key = new_run(store, runs, series, args.new_run_series)
        verdict = store.evaluate_run(key, RuleConfig.from_cfg())
        print(f"new run: {args.new_run_series} perf + 2 accuracy rows -> {len(verdict.alerts)} alert(s)")
        probe = series[len(series) // 2]
        with store.engine.connect() as conn:
            plan = conn.execute(
                text(
                    "EXPLAIN SELECT p.throughput_best FROM perf_results p JOIN validation_runs r ON r.id = p.run_id "
                    "WHERE p.target=:t AND p.device_kind=:k AND p.batch_size=:b AND p.precision=:p AND p.mode='real' "
                    "AND r.status='success' ORDER BY p.run_started_at DESC LIMIT 100"
                ),
                {"t": probe[0], "k": probe[1], "b": probe[2], "p": probe[3]},
            ).scalars().all()  # fmt: skip
        print("plan: " + " | ".join(line.strip() for line in plan if "Scan" in line))

        with_ix = measure(store, key, probe, args.repeats)
        with store.engine.begin() as conn:
            conn.execute(text("DROP INDEX ix_perf_series"))
            conn.execute(text("ANALYZE perf_results"))
        without = measure(store, key, probe, max(5, args.repeats // 4))

        print(f"\nmedian of {args.repeats} timings, PostgreSQL, {n_rows:,} perf rows (goal < {GOAL_MS:g} ms):")
        print(f"{'':38s}{'with index':>12s}{'no index':>12s}{'ratio':>8s}  goal")
        for name, ms in with_ix.items():
            ratio = without[name] / ms if ms else float("nan")
            ok = "ok" if ms < GOAL_MS else "MISSED"
            print(f"{name:38s}{ms:10.2f}ms{without[name]:10.2f}ms{ratio:7.1f}x  {ok}")
        return 0 if all(ms < GOAL_MS for ms in with_ix.values()) else 1
    finally:
        if store is not None:
            store.close()
        admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        admin.close()


if __name__ == "__main__":
    sys.exit(main())
