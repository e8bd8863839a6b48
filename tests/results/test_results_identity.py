"""Series identity (issue 9 sections 1, 5), failure rows, run kind / disk use, the parity gate, and the
upgrade of a 0001 database holding rows -- on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from results_helpers import T0, acc_row, perf_row
from sqlalchemy import inspect, text

from reid_tasks.errors import ResultsError
from reid_tasks.results import FailureRow, ResultsStore, RuleConfig, RunInfo
from reid_tasks.results import migrate as migrate_mod
from reid_tasks.results.engine import make_engine

HW_A = {"host": "bench-1", "cpu": "AMD EPYC 7B13", "isa": ["avx2"]}
HW_B = {"host": "bench-2", "cpu": "Intel Xeon 8480+", "isa": ["avx2", "avx512f", "avx512_vnni", "amx"]}
FP = {"dataset": "market1501", "sha256": "d" * 64}


def _run(store: ResultsStore, key: str, day: float, perf=(), acc=(), *, model: str = "a", status="success", **info):  # type: ignore[no-untyped-def]
    store.start_run(
        RunInfo(
            run_key=key,
            trigger="scheduled",
            started_at=T0 + timedelta(days=day),
            model_sha256=model * 64,
            dataset_fingerprint=FP,
            **info,
        )
    )
    for row in perf:
        store.record_perf(key, row)
    for row in acc:
        store.record_accuracy(key, row)
    store.finish_run(key, status)
    return store.evaluate_run(key, RuleConfig())


def _verdict(verdict, rule: str, metric: str):  # type: ignore[no-untyped-def]
    return next(v for v in verdict.verdicts if v.rule == rule and v.metric == metric)


def test_history_only_from_the_same_identity(store: ResultsStore) -> None:
    for i in range(6):
        _run(store, f"a{i}", i, [perf_row(1000.0 + i % 2, hardware=HW_A)], [acc_row(94.5)])
    # Same series key, another checkpoint: 20 % slower and 3 pt worse, yet no history verdict from model a.
    other = _run(store, "b0", 10, [perf_row(800.0, hardware=HW_A)], [acc_row(91.5)], model="b")
    assert not other.alerts
    assert _verdict(other, "perf_none", "throughput").regressed is None
    assert _verdict(other, "accuracy_history", "rank1").regressed is None
    assert all(v.baseline_runs == [] for v in other.verdicts)
    # Same model on another CPU: a new perf series, but the same accuracy series.
    moved = _run(store, "a-hw", 11, [perf_row(700.0, hardware=HW_B)], [acc_row(94.5)])
    assert not moved.alerts
    acc = _verdict(moved, "accuracy_history", "rank1")
    assert acc.regressed is False and acc.baseline_runs == [f"a{i}" for i in reversed(range(6))]
    # Same identity: judged against model a's runs on HW_A only, and says which ones.
    again = _run(store, "a-next", 12, [perf_row(800.0, hardware=HW_A)], [acc_row(94.5)])
    thr = _verdict(again, "perf_history", "throughput")
    assert thr.regressed is True and thr.baseline_runs == [f"a{i}" for i in reversed(range(6))]
    # The evaluation config is part of the identity: the speed-only export is a series of its own.
    speed_only = _run(store, "a-before", 13, [], [acc_row(80.0, neck_feat="before", feat_norm=False)])
    assert not speed_only.alerts


def test_simulated_rows_are_never_a_baseline_nor_referenced(store: ResultsStore) -> None:
    ascend = dict(target="ascend310", device_kind="Ascend310", precision="fp16", hardware=HW_A)
    rules = RuleConfig(reference_throughput=(("ascend310", "Ascend310", 16, 5000.0),), reference_rank1=94.5)
    for i in range(6):
        store.start_run(RunInfo(run_key=f"s{i}", started_at=T0 + timedelta(days=i), model_sha256="a" * 64))
        store.record_perf(f"s{i}", perf_row(640.0, simulated=True, **ascend))
        store.record_accuracy(f"s{i}", acc_row(50.0, simulated=True, target="ascend310", precision="fp16"))
        store.finish_run(f"s{i}")
        verdict = store.evaluate_run(f"s{i}", rules)
        assert not verdict.alerts  # far below both references: simulated numbers are not checked against them
        assert verdict.simulated_rows == 2 and verdict.status == "success"
        assert any(line.startswith("SIMULATED: 2 result row(s)") for line in verdict.summary_lines())
    store.start_run(RunInfo(run_key="real", started_at=T0 + timedelta(days=9), model_sha256="a" * 64))
    store.record_perf("real", perf_row(4000.0, **ascend))
    store.finish_run("real")
    verdict = store.evaluate_run("real", rules)
    assert [v.rule for v in verdict.verdicts if v.metric == "throughput"] == [
        "perf_reference"
    ]  # six simulated: no history
    assert verdict.simulated_rows == 0 and not any("SIMULATED" in line for line in verdict.summary_lines())
    rows = {r.run_key: r for r in store.results(target="ascend310")}
    assert rows["s0"].simulated and not rows["real"].simulated
    series = store.series("throughput", "ascend310", 16, precision="fp16")
    assert series.method == "perf_reference" and not any(p.good for p in series.points if p.simulated)


def test_run_kind_and_disk_usage(store: ResultsStore) -> None:
    store.start_run(RunInfo(run_key="demo", kind="demo", started_at=T0))
    store.record_perf("demo", perf_row(1000.0))
    store.set_disk_usage("demo", 123_456_789_012)
    run = store.get_run("demo")
    assert (run.kind, run.disk_bytes) == ("demo", 123_456_789_012)
    assert store.results(run_key="demo")[0].run_kind == "demo"
    store.finish_run("demo")
    assert any(line.startswith("DEMO run") for line in store.evaluate_run("demo", RuleConfig()).summary_lines())
    with pytest.raises(ResultsError, match="kind"):
        RunInfo(run_key="x", kind="nightly")  # type: ignore[arg-type]
    with pytest.raises(ResultsError, match="bytes"):
        store.set_disk_usage("demo", -1)


def test_benchmark_device_is_shown_with_its_host(store: ResultsStore) -> None:
    """Device 0 on two hosts are two devices: the results rows name host and id."""
    store.start_run(RunInfo(run_key="fleet", started_at=T0))
    for host in ("npu-a", "npu-b"):
        store.record_perf(
            "fleet",
            perf_row(
                2500.0,
                target="ascend310",
                device_kind="310",
                precision="fp16",
                device_host=host,
                device_id="0",
                batch_size=1 if host == "npu-a" else 4,
            ),
        )
    store.record_perf("fleet", perf_row(30.0, device_host="worker-1"))
    devices = {(r.target, r.batch_size): r.device for r in store.results(run_key="fleet")}
    assert devices == {("ascend310", 1): "npu-a:0", ("ascend310", 4): "npu-b:0", ("onnxruntime", 16): "worker-1"}


def test_failure_rows_fail_the_run_and_a_retry_clears_them(store: ResultsStore) -> None:
    key = "r1"
    store.start_run(RunInfo(run_key=key, started_at=T0, model_sha256="a" * 64))
    store.record_perf(key, perf_row(1000.0))
    store.record_accuracy(key, acc_row())
    fail = FailureRow("openvino", 16, "int8", "convert", "mo failed: shape mismatch", "E: line\nE: tail", 1)
    store.record_failure(key, fail)
    store.record_failure(key, FailureRow("openvino", 16, "int8", "convert", "still failing", "tail 2", 2))
    rows = store.failures(key)
    assert len(rows) == 1 and (rows[0].message, rows[0].attempt, rows[0].log_tail) == ("still failing", 2, "tail 2")
    assert rows[0].recorded_at is not None
    assert store.finish_run(key, "success") == "failed"  # never success with a failed artifact
    verdict = store.evaluate_run(key, RuleConfig())
    assert verdict.status == "failed" and verdict.failures[0].stage == "convert"
    assert any(line.startswith("FAILED openvino/bs16/int8 at convert") for line in verdict.summary_lines())
    shown = [r for r in store.results(run_key=key) if r.failed_stage]
    assert [(r.target, r.precision, r.failure_message) for r in shown] == [("openvino", "int8", "still failing")]
    # With an alert as well the run is 'regressed'.
    store.record_accuracy(key, acc_row(target="onnxruntime", batch_size=1, rank1=93.0))
    assert store.evaluate_run(key, RuleConfig()).status == "regressed"
    # The retry that succeeds removes the failure; finishing again settles the status.
    assert store.clear_failure(key, "openvino", 16, "int8") is True
    assert store.clear_failure(key, "openvino", 16, "int8") is False
    assert store.failures(key) == []
    assert store.finish_run(key, "failed") == "failed"  # a pipeline failure without failure rows stays failed


def test_parity_failure_is_an_alert_that_fails_the_run(store: ResultsStore) -> None:
    detail = {
        "checks": [
            {"measure": "min_cosine", "value": 0.976, "limit": 0.99, "passed": False},
            {"measure": "rank1_drop", "value": 0.1, "limit": 0.5, "passed": True},
        ]
    }
    bad = acc_row(
        target="openvino", precision="int8", parity_passed=False, parity_detail=detail, parity_sample_size=512
    )
    good = acc_row(target="onnxruntime", parity_passed=True, parity_detail={"checks": [detail["checks"][1]]})
    verdict = _run(store, "p1", 0, [], [bad, good])
    assert verdict.status == "regressed"
    (alert,) = verdict.alerts
    assert (alert.rule, alert.metric, alert.observed, alert.threshold) == ("parity", "min_cosine", 0.976, 0.99)
    assert "openvino/bs16/int8" in alert.message and "min_cosine = 0.976" in alert.message
    assert "limit 0.99" in alert.message
    assert [a.id for a in store.alerts(run_key="p1")] == [alert.id]
    passed = [v for v in verdict.verdicts if v.rule == "parity" and v.regressed is False]
    assert len(passed) == 2
    assert store.results(run_key="p1", target="openvino")[0].parity_passed is False


def _insert_0001_rows(url: str) -> None:
    """Rows as reid-validate wrote them at revision 0001 (raw SQL: today's models have more columns)."""
    engine = make_engine(url)
    try:
        migrate_mod.upgrade(engine, "0001")
        with engine.begin() as conn:
            for i, status in enumerate(("success", "success", "regressed")):
                conn.execute(
                    text(
                        "INSERT INTO validation_runs (run_key, trigger, started_at, status, model_sha256, "
                        "dataset_fingerprint, config_overrides, environment, notes, updated_at) VALUES "
                        "(:k, 'scheduled', :t, :s, :m, '{}', '{}', '{}', '', :t)"
                    ),
                    {"k": f"old{i}", "t": T0 + timedelta(days=i), "s": status, "m": "a" * 64},
                )
                run_id = conn.execute(
                    text("SELECT id FROM validation_runs WHERE run_key = :k"), {"k": f"old{i}"}
                ).scalar()
                conn.execute(
                    text(
                        "INSERT INTO perf_results (run_id, run_started_at, target, device_kind, batch_size, precision, "
                        "mode, throughput_best, throughput_median, samples, repetitions, warmup, tool_versions, "
                        "recorded_at) VALUES (:r, :t, 'onnxruntime', 'cpu', 16, 'fp32', 'real', :v, :v, 100, 3, 1, "
                        "'{}', :t)"
                    ),
                    {"r": run_id, "t": T0 + timedelta(days=i), "v": 1000.0 + i},
                )
                conn.execute(
                    text(
                        "INSERT INTO accuracy_results (run_id, run_started_at, target, batch_size, precision, "
                        "re_ranking, feat_norm, rank1, rank5, rank10, map, minp, valid_queries, gallery_size, "
                        "flagged, recorded_at) VALUES (:r, :t, 'onnxruntime', 16, 'fp32', false, true, :v, 98.0, "
                        "99.0, 85.9, 60.0, 3368, 15913, :f, :t)"
                    ),
                    {"r": run_id, "t": T0 + timedelta(days=i), "v": 94.5 - i, "f": i == 2},
                )
            conn.execute(
                text(
                    "INSERT INTO alerts (run_id, rule, metric, series_key, series, observed, message, env_diff, "
                    "created_at) VALUES (:r, 'accuracy_history', 'rank1', 'onnxruntime/bs16/fp32', '{}', 92.5, 'x', "
                    "'{}', :t)"
                ),
                {"r": run_id, "t": T0},
            )
    finally:
        engine.dispose()


def test_upgrade_of_a_0001_database_keeps_and_labels_every_row(empty_url: str) -> None:
    _insert_0001_rows(empty_url)
    with ResultsStore.open(empty_url, migrate=True) as store:
        engine = store.engine
        assert migrate_mod.current(engine) == migrate_mod.head_revision()
        assert "failures" in inspect(engine).get_table_names()
        with engine.connect() as conn:
            perf = conn.execute(
                text("SELECT throughput_best, identity_key, simulated, model_sha256 FROM perf_results ORDER BY id")
            ).all()
            acc = conn.execute(
                text("SELECT rank1, flagged, identity_key, simulated FROM accuracy_results ORDER BY id")
            ).all()
            runs = conn.execute(text("SELECT run_key, status, kind, disk_bytes FROM validation_runs ORDER BY id")).all()
            alerts = conn.execute(text("SELECT count(*) FROM alerts")).scalar()
        assert [tuple(r) for r in perf] == [(1000.0 + i, "unknown", False, None) for i in range(3)]
        assert [tuple(r) for r in acc] == [(94.5 - i, i == 2, "unknown", False) for i in range(3)]
        assert [tuple(r) for r in runs] == [
            ("old0", "success", None, None),
            ("old1", "success", None, None),
            ("old2", "regressed", None, None),
        ]
        assert alerts == 1
        assert [r.run_kind for r in store.results()] == [None, None, None]
        # A new run of the same series: the old rows (identity unknown) are no baseline.
        store.start_run(RunInfo(run_key="new", started_at=T0 + timedelta(days=5), model_sha256="a" * 64))
        store.record_perf("new", perf_row(500.0))
        store.record_accuracy("new", acc_row(80.0))
        store.finish_run("new")
        verdict = store.evaluate_run("new", RuleConfig())
        assert not verdict.alerts and all(not v.baseline_runs for v in verdict.verdicts)
        assert store.results(run_key="new")[0].run_kind == "configured"
    # And back: the downgrade to 0001 keeps the rows too.
    engine = make_engine(empty_url)
    try:
        migrate_mod.downgrade(engine, "0001")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM perf_results")).scalar() == 4
            assert conn.execute(text("SELECT count(*) FROM validation_runs")).scalar() == 4
    finally:
        engine.dispose()
