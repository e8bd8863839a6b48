"""Store: migrations, upserts, concurrent and killed writers, queries, URL resolution (SQLite and PostgreSQL)."""

from __future__ import annotations

import multiprocessing
import sqlite3
from datetime import timedelta

import pytest
import results_helpers
from results_helpers import T0, acc_row, perf_row, record_run
from sqlalchemy import create_engine, event, inspect, text

from reid_tasks.errors import ResultsError, ResultsNotFound
from reid_tasks.results import (
    AccuracyRow,
    PerfRow,
    ResultsStore,
    RunInfo,
    RunVerdict,
    collect_environment,
    normalize_url,
    resolve_url,
)
from reid_tasks.results import migrate as migrate_mod
from reid_tasks.results.store import make_engine

TABLES = {"validation_runs", "perf_results", "accuracy_results", "alerts", "failures", "series_baselines"}


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


# ---------------------------------------------------------------------- migrations
def test_migrations_up_down_up(empty_url: str) -> None:
    engine = make_engine(empty_url)
    try:
        head = migrate_mod.head_revision()
        assert migrate_mod.current(engine) is None
        assert migrate_mod.upgrade(engine) == head
        assert _tables(empty_url) == TABLES
        indexes = {ix["name"] for ix in inspect(engine).get_indexes("perf_results")}
        assert "ix_perf_series" in indexes
        assert migrate_mod.downgrade(engine, "base") is None
        assert _tables(empty_url) == set()
        assert migrate_mod.upgrade(engine, "head") == head
        assert _tables(empty_url) == TABLES
    finally:
        engine.dispose()


def test_sqlite_is_migrated_on_first_use(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "sub" / "results.sqlite"
    with ResultsStore.open(f"sqlite:///{path}") as store:
        store.start_run(RunInfo(run_key="r1"))
    assert path.is_file()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == migrate_mod.head_revision()


def test_postgres_needs_explicit_upgrade(empty_pg_url: str) -> None:
    with pytest.raises(ResultsError, match="reid-validate db upgrade"):
        ResultsStore.open(empty_pg_url)
    ResultsStore.open(empty_pg_url, migrate=True).close()
    ResultsStore.open(empty_pg_url).close()  # now at head: opens without migrating


def test_unknown_revision_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    ResultsStore.open(url).close()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(ResultsError, match="newer version"):
        ResultsStore.open(url)


# ---------------------------------------------------------------------- writing
def test_rerun_updates_never_duplicates(store: ResultsStore) -> None:
    key = "reid_validation/manual__1"
    first = store.start_run(RunInfo(run_key=key, trigger="manual", started_at=T0, notes="first"))
    store.record_perf(key, perf_row(1000.0))
    store.record_accuracy(key, acc_row(94.0))
    store.finish_run(key, "failed")
    # Airflow retry of the same run: same key.
    again = store.start_run(RunInfo(run_key=key, trigger="manual", started_at=T0 + timedelta(hours=1), notes="2nd"))
    assert again == first
    assert store.get_run(key).status == "running"
    store.record_perf(key, perf_row(1100.0))
    store.record_perf(key, perf_row(1200.0, mode="pure"))
    store.record_accuracy(key, acc_row(94.6))
    assert store.finish_run(key) == "success"
    rows = store.results(run_key=key)
    assert len(rows) == 1
    row = rows[0]
    assert (row.throughput_best, row.pure_throughput, row.rank1) == (1100.0, 1200.0, 94.6)
    run = store.get_run(key)
    assert run.notes == "2nd" and run.started_at == T0 + timedelta(hours=1)
    with store.engine.connect() as conn:
        counts = [conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in sorted(TABLES)]
        started = conn.execute(text("SELECT DISTINCT run_started_at FROM perf_results")).all()
    assert counts == [1, 0, 0, 2, 0, 1]  # accuracy, alerts, failures, perf (real + pure), baselines, runs
    assert len(started) == 1  # the denormalised start time followed the update


def test_unknown_run_and_bad_status(store: ResultsStore) -> None:
    with pytest.raises(ResultsError, match="unknown run 'nope'"):
        store.record_perf("nope", perf_row(1.0))
    store.start_run(RunInfo(run_key="r"))
    with pytest.raises(ResultsError, match="status must be one of"):
        store.finish_run("r", "regressed")
    with pytest.raises(ResultsError, match="no alert with id"):
        store.ack(12345)


def test_records_validate_and_roundtrip() -> None:
    info = RunInfo(run_key="d/r", trigger="scheduled", environment=collect_environment({"cann": "5.0.1"}))
    assert RunInfo.from_dict(info.to_dict()) == info
    assert info.environment["cann"] == "5.0.1" and "python" in info.environment and "host" in info.environment
    row = perf_row(10.0, device_id=3)
    assert row.device_id == "3" and PerfRow.from_dict(row.to_dict()) == row
    assert AccuracyRow.from_dict(acc_row().to_dict()) == acc_row()
    with pytest.raises(ResultsError, match="percentage"):
        acc_row(rank1=0.945 * 1000)
    with pytest.raises(ResultsError, match="mode"):
        perf_row(1.0, mode="fast")
    with pytest.raises(ResultsError, match="unknown fields"):
        PerfRow.from_dict({**row.to_dict(), "fps": 1})
    with pytest.raises(ResultsError, match="trigger"):
        RunInfo(run_key="x", trigger="cron")


def test_verdict_roundtrip(store: ResultsStore) -> None:
    verdict = record_run(store, "r", 0, [perf_row(100.0)], [acc_row(80.0)])
    assert verdict.alerts
    assert RunVerdict.from_dict(verdict.to_dict()) == verdict


# ---------------------------------------------------------------------- concurrency
def test_eight_concurrent_writers_lose_nothing(db_url: str) -> None:
    ResultsStore.open(db_url, migrate=True).close()
    ctx = multiprocessing.get_context("spawn")
    n, rows = 8, 6
    barrier = ctx.Barrier(n)
    procs = [
        ctx.Process(target=results_helpers.concurrent_writer, args=(db_url, "run/1", w, rows, barrier))
        for w in range(n)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(240)
    assert [proc.exitcode for proc in procs] == [0] * n
    with ResultsStore.open(db_url) as store, store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM validation_runs")).scalar() == 1
        assert conn.execute(text("SELECT count(*) FROM perf_results")).scalar() == n * rows + 1
        assert conn.execute(text("SELECT count(*) FROM accuracy_results")).scalar() == n
        per_target = dict(conn.execute(text("SELECT target, count(*) FROM perf_results GROUP BY target")).all())
    assert per_target == {**{f"t{w}": rows for w in range(n)}, "shared": 1}


def test_killed_writer_leaves_no_good_run(db_url: str) -> None:
    with ResultsStore.open(db_url, migrate=True) as store:
        for i in range(6):
            record_run(store, f"h{i}", i, [perf_row(1000.0 + i)])
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=results_helpers.killed_writer, args=(db_url, "killed", ready))
    proc.start()
    try:
        assert ready.wait(120), "writer did not reach its open transaction"
        results_helpers.kill(proc.pid)
    finally:
        proc.join(30)
    assert proc.exitcode is not None and proc.exitcode < 0
    with ResultsStore.open(db_url) as store:
        run = store.get_run("killed")
        assert run.status == "running" and run.notes == ""  # the open transaction was rolled back
        series = store.series("throughput", "onnxruntime", 16)
        assert [p.run_key for p in series.points] == [f"h{i}" for i in range(6)]  # 'running' is not shown
        assert min(p.value for p in series.points) == 1000.0
        # The database is writable again (no lock left behind), and the killed run is no baseline.
        verdict = record_run(store, "next", 40, [perf_row(1002.0)])
        thr = next(v for v in verdict.verdicts if v.metric == "throughput")
        assert thr.history == 6 and not verdict.alerts


# ---------------------------------------------------------------------- queries
def test_results_filters_and_order(store: ResultsStore) -> None:
    for i in range(3):
        record_run(
            store,
            f"r{i}",
            i,
            [perf_row(100.0 + i, batch_size=1), perf_row(200.0 + i, batch_size=16)],
            [acc_row(94.5, batch_size=1), acc_row(94.5, batch_size=16), acc_row(95.4, 94.2, re_ranking=True)],
        )
    rows = store.results()
    assert [r.run_key for r in rows] == ["r2", "r2", "r1", "r1", "r0", "r0"]
    assert rows[0].batch_size == 1 and rows[1].rerank_rank1 == 95.4 and rows[1].rank1 == 94.5
    assert [r.throughput_best for r in store.results(batch_size=16)] == [202.0, 201.0, 200.0]
    assert len(store.results(limit=3)) == 3
    assert [r.run_key for r in store.results(since=T0 + timedelta(days=1))] == ["r2", "r2", "r1", "r1"]
    assert store.results(target="tensorrt") == []


def test_series_points_and_band(store: ResultsStore) -> None:
    for i in range(6):
        record_run(store, f"r{i}", i, [perf_row(1000.0 + (i % 2) * 10)], [acc_row(94.5 + (i % 2) * 0.1)])
    ser = store.series("throughput", "onnxruntime", 16, limit=4)
    assert [p.run_key for p in ser.points] == ["r2", "r3", "r4", "r5"]
    assert ser.method == "perf_history" and ser.baseline == pytest.approx(1005.0)
    lo, hi = ser.band
    assert lo == ser.threshold < ser.baseline < hi
    acc = store.series("rank1", "onnxruntime", 16)
    assert acc.method == "change_point" and acc.threshold == pytest.approx(acc.baseline - 0.3)
    empty = store.series("throughput", "tensorrt", 16)
    assert empty.points == [] and empty.baseline is None
    store.start_run(RunInfo(run_key="gpu", started_at=T0 + timedelta(days=9)))
    store.record_perf("gpu", perf_row(10.0, device_kind="gpu"))
    with pytest.raises(ResultsError, match="several device kinds"):
        store.series("throughput", "onnxruntime", 16)


def _airflow_run(store: ResultsStore, day: int, perf=(), acc=()) -> str:  # type: ignore[no-untyped-def]
    """An Airflow-triggered run (dag_id / run_id set) started ``day`` days after T0, finished and evaluated."""
    run_id = f"scheduled__d{day}"
    key = RunInfo.airflow_key("reid_validation", run_id)
    store.start_run(
        RunInfo(
            run_key=key,
            trigger="scheduled",
            dag_id="reid_validation",
            run_id=run_id,
            started_at=T0 + timedelta(days=day),
            model_sha256="a" * 64,  # the model and data record_run measures: one series identity
            dataset_fingerprint={"query": 3368, "gallery": 15913, "hash": "f00d"},
            environment=dict(results_helpers.ENV),
        )
    )
    for row in perf:
        store.record_perf(key, row)
    for row in acc:
        store.record_accuracy(key, row)
    store.finish_run(key, "success", finished_at=T0 + timedelta(days=day, hours=1))
    store.evaluate_run(key)
    return key


def _count_selects(store: ResultsStore) -> list[str]:
    """Every SELECT the store's engine sends from now on."""
    seen: list[str] = []

    def on_execute(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    event.listen(store.engine, "before_cursor_execute", on_execute)
    return seen


def test_results_until_and_device_kind_in_sql(store: ResultsStore) -> None:
    keys = [
        _airflow_run(store, d, [perf_row(100.0 + d, batch_size=1), perf_row(200.0 + d)], [acc_row(94.5)])
        for d in range(3)
    ]
    gpu = _airflow_run(store, 3, [perf_row(900.0, device_kind="cuda")], [acc_row(94.4)])
    acc_only = _airflow_run(store, 4, [], [acc_row(94.3)])
    everything = store.results()
    assert [r.run_key for r in everything] == [acc_only, gpu, keys[2], keys[2], keys[1], keys[1], keys[0], keys[0]]

    # until: inclusive, alone and with since.
    assert [r.run_key for r in store.results(until=T0 + timedelta(days=1))] == [keys[1], keys[1], keys[0], keys[0]]
    assert [r.run_key for r in store.results(until=T0 + timedelta(days=1) - timedelta(seconds=1))] == [keys[0]] * 2
    window = store.results(since=T0 + timedelta(days=1), until=T0 + timedelta(days=3), batch_size=16)
    assert [(r.run_key, r.device_kind) for r in window] == [(gpu, "cuda"), (keys[2], "cpu"), (keys[1], "cpu")]
    assert store.results(since=T0 + timedelta(days=2), until=T0 + timedelta(days=1)) == []

    # device_kind: only rows measured on it, accuracy beside them; runs without such a perf row left out.
    cpu = store.results(device_kind="cpu")
    assert {r.device_kind for r in cpu} == {"cpu"} and len(cpu) == 6
    assert all(r.rank1 == 94.5 for r in cpu if r.batch_size == 16)
    cuda = store.results(device_kind="cuda")
    assert [(r.run_key, r.throughput_best, r.rank1) for r in cuda] == [(gpu, 900.0, 94.4)]
    # The limit applies after the filter: the newest cpu row, although newer runs of other kinds exist.
    newest_cpu = store.results(device_kind="cpu", limit=1)
    assert [(r.run_key, r.batch_size) for r in newest_cpu] == [(keys[2], 1)]
    assert store.results(device_kind="cpu", until=T0, batch_size=16)[0].throughput_best == 200.0
    # Bound parameters: a quote is just part of a value that matches nothing.
    assert store.results(device_kind="cpu' OR '1'='1") == []
    assert store.results(until="2025-01-02T02:00:00+00:00")[0].run_key == keys[1]  # ISO strings accepted
    with pytest.raises(ResultsError, match="limit"):
        store.results(limit=0)


def test_results_query_count_does_not_grow_with_rows(store: ResultsStore) -> None:
    for d in range(6):
        _airflow_run(store, d, [perf_row(100.0 + d, batch_size=1), perf_row(200.0 + d)], [acc_row(94.5)])
    selects = _count_selects(store)
    assert len(store.results(limit=1)) == 1
    few = len(selects)
    selects.clear()
    assert len(store.results(device_kind="cpu", until=T0 + timedelta(days=9))) == 12
    assert len(selects) == few == 5  # runs, perf, accuracy, open alert counts, failures


def test_rows_points_and_alerts_carry_the_airflow_run(store: ResultsStore) -> None:
    for d in range(6):
        _airflow_run(store, d, [perf_row(1000.0 + (d % 2))], [acc_row(94.5)])
    last = _airflow_run(store, 6, [perf_row(800.0)], [acc_row(94.5)])
    record_run(store, "local-1", 7, [perf_row(1000.0)])  # outside Airflow
    rows = store.results()
    assert (rows[0].run_key, rows[0].dag_id, rows[0].run_id) == ("local-1", None, None)
    assert (rows[1].run_key, rows[1].dag_id, rows[1].run_id) == (last, "reid_validation", "scheduled__d6")
    points = store.series("throughput", "onnxruntime", 16).points
    assert [(p.dag_id, p.run_id) for p in points[:7]] == [("reid_validation", f"scheduled__d{d}") for d in range(7)]
    assert (points[-1].run_key, points[-1].dag_id) == ("local-1", None)
    alerts = store.alerts(run_key=last)
    assert alerts and {(a.dag_id, a.run_id) for a in alerts} == {("reid_validation", "scheduled__d6")}
    acked = store.ack(alerts[0].id, by="me")
    assert (acked.dag_id, acked.run_id) == ("reid_validation", "scheduled__d6")


def test_alert_by_id(store: ResultsStore) -> None:
    for d in range(6):
        _airflow_run(store, d, [perf_row(1000.0 + (d % 2))])
    last = _airflow_run(store, 6, [perf_row(800.0)])
    for listed in store.alerts():
        assert store.alert(listed.id) == listed
    one = store.alerts(run_key=last)[0]
    assert store.alert(one.id).run_key == last and store.alert(one.id).dag_id == "reid_validation"
    store.ack(one.id, by="me")
    assert store.alert(one.id).acknowledged_by == "me" and not store.alert(one.id).open
    missing = max(a.id for a in store.alerts()) + 1000
    with pytest.raises(ResultsNotFound, match=f"no alert with id {missing}"):
        store.alert(missing)
    with pytest.raises(ResultsNotFound):
        store.ack(missing)
    with pytest.raises(ResultsNotFound, match="unknown run"):
        store.get_run("nope")


# ---------------------------------------------------------------------- URLs
def test_url_resolution_order(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from reid_tasks.config import load_config

    monkeypatch.delenv("REID_RESULTS_DB_URL", raising=False)
    monkeypatch.delenv("AIRFLOW_CTX_DAG_ID", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_REID_RESULTS_DB", "postgres://a@airflow-host/r")
    cfg = load_config(opts=["VALIDATION.DATA_DIR", str(tmp_path)])
    sqlite_default = f"sqlite:///{tmp_path / 'results.sqlite'}"
    assert resolve_url(cfg=cfg) == sqlite_default  # not inside Airflow
    assert resolve_url(cfg=cfg, airflow=True) == "postgresql+psycopg://a@airflow-host/r"  # e.g. the api-server
    monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", "reid_validation")
    assert resolve_url(cfg=cfg) == "postgresql+psycopg://a@airflow-host/r"
    assert resolve_url(cfg=cfg, airflow=False) == sqlite_default
    monkeypatch.delenv("AIRFLOW_CONN_REID_RESULTS_DB")
    assert resolve_url(cfg=cfg) == resolve_url(cfg=cfg, airflow=True) == sqlite_default  # no such connection
    monkeypatch.setenv("AIRFLOW_CONN_REID_RESULTS_DB", "postgres://a@airflow-host/r")
    monkeypatch.setenv("REID_RESULTS_DB_URL", "postgresql://env-host/r")
    assert resolve_url(cfg=cfg) == "postgresql+psycopg://env-host/r"
    cfg2 = load_config(opts=["VALIDATION.RESULTS_DB_URL", "sqlite:////tmp/cfg.sqlite"])
    assert resolve_url(cfg=cfg2) == "sqlite:////tmp/cfg.sqlite"
    assert resolve_url("postgres://x@h/db", cfg=cfg2) == "postgresql+psycopg://x@h/db"
    assert normalize_url("postgresql+psycopg://x@h/db") == "postgresql+psycopg://x@h/db"
    with pytest.raises(ResultsError, match="not a database URL"):
        normalize_url("results.sqlite")
    with pytest.raises(ResultsError, match="unsupported results database"):
        make_engine("mysql://x@h/db")
