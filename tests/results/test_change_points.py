"""Change-point verdicts through the store (SQLite and PostgreSQL): a step, a recovery, an accepted change,
an outlier night; the history CLI prints change points and accepted baselines."""

from __future__ import annotations

import json
import random

import pytest
from results_helpers import ENV, acc_row, perf_row, record_run

from reid_tasks.cli import main as cli_main

N = 20  # runs of history: enough for change-point detection (the detector needs 11)


def _steady(store, n: int = N, *, level: float = 1000.0, seed: int = 0, start: int = 0) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    for i in range(start, start + n):
        record_run(store, f"h{i:02d}", i, [perf_row(level * (1 + 0.01 * rng.gauss(0, 1)))], [acc_row(94.5)])


def _thr(verdict):  # type: ignore[no-untyped-def]
    return [a for a in verdict.alerts if a.metric == "throughput"]


def test_step_alerts_once_confirmed_and_names_the_change_run(store) -> None:  # type: ignore[no-untyped-def]
    _steady(store)
    env = {**ENV, "onnxruntime": "1.33.0"}
    first = record_run(store, "s0", N, [perf_row(900.0, tool_versions={"onnxruntime": "1.33.0"})], env=env)
    assert _thr(first) == [] and first.status == "success"  # one low night is not yet a new level
    verdict = record_run(store, "s1", N + 1, [perf_row(897.0, tool_versions={"onnxruntime": "1.33.0"})], env=env)
    (alert,) = _thr(verdict)
    assert alert.rule == "perf_history" and alert.change_run == "s0"
    assert alert.level_before == pytest.approx(1000, rel=0.02) and alert.level_after == pytest.approx(898.5)
    assert alert.rel_change == pytest.approx(-0.10, abs=0.02) and alert.p_value < 0.01
    # What changed: the change run against the run just before it (not against the run that alerted).
    assert alert.env_diff == {
        "environment.onnxruntime": ["1.32.0", "1.33.0"],
        "tool_versions.onnxruntime": ["1.32.0", "1.33.0"],
    }
    assert "level changed at run s0" in alert.message and "changed at run s0 (vs h19 before it)" in alert.message
    assert verdict.status == "regressed"
    # Latency rose with the drop (16000 / throughput): same change run.
    lat = next(a for a in verdict.alerts if a.metric == "latency_p99")
    assert lat.change_run == "s0" and lat.rel_change > 0.05


def test_recovery_raises_no_new_alert(store) -> None:  # type: ignore[no-untyped-def]
    _steady(store)
    record_run(store, "s0", N, [perf_row(880.0)])
    assert _thr(record_run(store, "s1", N + 1, [perf_row(884.0)]))
    for i in range(3):  # the level comes back: an improvement, not a regression
        verdict = record_run(store, f"r{i}", N + 2 + i, [perf_row(1000.0 + i)])
        assert verdict.alerts == [] and verdict.status == "success", verdict.summary_lines()


def test_outlier_night_raises_no_alert(store) -> None:  # type: ignore[no-untyped-def]
    _steady(store)
    for key, day, value in (("bad", N, 700.0), ("next", N + 1, 1003.0), ("after", N + 2, 998.0)):
        verdict = record_run(store, key, day, [perf_row(value)])
        assert _thr(verdict) == [], (key, verdict.summary_lines())
    thr = next(v for v in verdict.verdicts if v.metric == "throughput")
    assert thr.rule == "perf_history" and thr.regressed is False and "no change point" in thr.message


def test_accepted_change_restarts_the_baseline(store, capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _steady(store)
    record_run(store, "s0", N, [perf_row(850.0)])
    alerted = record_run(store, "s1", N + 1, [perf_row(852.0)])
    again = record_run(store, "s2", N + 2, [perf_row(849.0)])  # still at the new level: same change named
    (a1,) = _thr(alerted)
    (a2,) = _thr(again)
    assert a1.change_run == a2.change_run == "s0"
    acked = store.ack(a1.id, by="tester")
    assert acked.acknowledged_by == "tester"
    # Every open alert naming that change is accepted with it; runs whose alerts are all acked are good again.
    # (latency moved with it at the same change run: accepted too).
    assert store.alerts(open_only=True) == []
    assert {r.status for r in store.runs()} == {"success"}
    bases = store.baselines(series_key="onnxruntime/cpu/bs16/fp32/real")
    assert [(b.metric, b.run_key, b.accepted_by) for b in bases] == [
        ("throughput", "s0", "tester"),
        ("latency_p99", "s0", "tester"),
    ]
    assert bases[0].alert_id == a1.id
    # Later verdicts use only the runs from the change point on: at the new level there is nothing to flag,
    # and the baseline is made of s0.. only (5 runs: too few for change detection, the z-score rule judges).
    record_run(store, "n0", N + 3, [perf_row(851.0)])
    record_run(store, "n1", N + 4, [perf_row(848.0)])
    verdict = record_run(store, "n2", N + 5, [perf_row(850.0)])
    thr = next(v for v in verdict.verdicts if v.metric == "throughput")
    assert _thr(verdict) == [] and thr.regressed is False and thr.history == 5
    assert thr.baseline == pytest.approx(850, abs=2)
    ser = store.series("throughput", "onnxruntime", 16)
    assert [c.run_key for c in ser.change_points] == ["s0"] and ser.change_points[0].accepted
    assert ser.change_points[0].alert_ids == [a1.id, a2.id]
    assert [b.run_key for b in ser.baselines] == ["s0"] and ser.baseline == pytest.approx(850, abs=2)
    # The history CLI prints them.
    url = store.url
    assert cli_main(["history", "--db", url, "--metric", "throughput", "--target", "onnxruntime",
                     "--batch-size", "16"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert f"change point at s0: {a2.level_before:.2f} -> 850.00 (" in out and "accepted, alert(s)" in out
    assert "baseline restarted at s0" in out and "by tester" in out
    assert cli_main(["history", "--db", url, "--metric", "throughput", "--target", "onnxruntime",
                     "--batch-size", "16", "--format", "json"]) == 0  # fmt: skip
    data = json.loads(capsys.readouterr().out)
    assert data["baselines"][0]["run_key"] == "s0" and data["change_points"][0]["alert_ids"][0] == a1.id
    from reid_tasks.results.plot import plot_series

    png = plot_series(ser, tmp_path / "trend.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_accuracy_change_alerts_on_the_first_run(store) -> None:  # type: ignore[no-untyped-def]
    for i in range(5):
        record_run(store, f"h{i}", i, [], [acc_row(94.5, 85.9)])
    verdict = record_run(store, "new", 5, [], [acc_row(93.9, 85.9)])
    hist = [a for a in verdict.alerts if a.rule == "accuracy_history"]
    assert [(a.metric, a.change_run) for a in hist] == [("rank1", "new")]
    assert hist[0].level_before == 94.5 and hist[0].level_after == 93.9
    assert "nothing changed" in hist[0].message


def test_hardware_change_is_a_new_series_not_an_alert(store) -> None:  # type: ignore[no-untyped-def]
    # The same target, device kind, batch and precision, 5x slower on another CPU: a series of its own (the
    # benchmark worker's hardware is part of the series identity), never judged against the first machine.
    hw_a = {"host": "bench-1", "cpu": "Intel Xeon 8480+", "isa": ["avx2", "avx512f", "avx512_vnni", "amx"]}
    hw_b = {"host": "bench-2", "cpu": "AMD EPYC 7B13", "isa": ["avx2"]}
    rng = random.Random(0)
    for i in range(N):
        record_run(store, f"a{i:02d}", i, [perf_row(1000 * (1 + 0.01 * rng.gauss(0, 1)), hardware=hw_a)])
    for i in range(3):
        verdict = record_run(store, f"b{i}", N + i, [perf_row(200.0 + i, hardware=hw_b)])
        assert verdict.alerts == [] and verdict.status == "success", verdict.summary_lines()
        thr = next(v for v in verdict.verdicts if v.metric == "throughput")
        assert thr.history == i and all(k.startswith("b") for k in thr.baseline_runs)
    # Back on the first machine: judged against its own runs only (change detection, no change).
    back = record_run(store, "back", N + 3, [perf_row(1002.0, hardware=hw_a)])
    thr = next(v for v in back.verdicts if v.metric == "throughput")
    assert back.alerts == [] and thr.rule == "perf_history" and thr.regressed is False
    assert thr.baseline_runs and all(k.startswith("a") for k in thr.baseline_runs)
