"""Regression rules: the pure functions, and through the store on synthetic histories (SQLite and PostgreSQL)."""

from __future__ import annotations

import dataclasses
import random

import pytest
from results_helpers import acc_row, perf_row, record_run

from reid_tasks.config import load_config
from reid_tasks.errors import ResultsError
from reid_tasks.results import RuleConfig, rule_config
from reid_tasks.results.evaluation import env_diff
from reid_tasks.results.rules import (
    accuracy_history_check,
    batch_invariance_checks,
    perf_check,
    zscore_check,
)

CFG = RuleConfig()


# ---------------------------------------------------------------------- pure functions
def test_defaults_match_config() -> None:
    cfg = RuleConfig.from_cfg()
    assert (cfg.perf_z, cfg.perf_min_change, cfg.perf_lookback, cfg.perf_min_history) == (5.0, 0.05, 100, 5)
    assert (cfg.reference_rank1, cfg.reference_map) == (94.5, 85.9)
    assert cfg.reference_for("ascend310", "Ascend310", 16, "fp16") == 2588.56
    assert cfg.reference_for("ascend310", "ascend310", 2, "fp16") is None
    assert cfg.reference_for("onnxruntime", "cpu", 16, "fp32") is None
    assert RuleConfig.from_cfg(use_reference=False).reference_rank1 is None
    assert RuleConfig.from_dict(cfg.to_dict()) == cfg


def test_from_cfg_reads_every_threshold() -> None:
    """Each threshold comes from its own VALIDATION.RULES key, with the field's type."""
    fields = [f for f in dataclasses.fields(RuleConfig) if not f.name.startswith("reference_")]
    values = {f.name: (len(f.name) + i if isinstance(f.default, int) else 0.5 + i) for i, f in enumerate(fields)}
    opts = [item for name, value in values.items() for item in (f"VALIDATION.RULES.{name.upper()}", str(value))]
    cfg = RuleConfig.from_cfg(load_config(opts=opts))
    assert {name: getattr(cfg, name) for name in values} == values
    assert all(type(getattr(cfg, f.name)) is type(f.default) for f in fields)


def test_steady_noise_does_not_alert() -> None:
    rng = random.Random(1)
    history = [1000 + rng.gauss(0, 10) for _ in range(100)]
    for observed in (975.0, 1000.0, 1030.0):
        check = perf_check("throughput", observed, history, None, CFG)
        assert check.rule == "perf_history" and check.regressed is False, check


def test_ten_percent_drop_alerts_and_reports_z() -> None:
    rng = random.Random(2)
    history = [1000 + rng.gauss(0, 10) for _ in range(50)]
    check = perf_check("throughput", 900.0, history, None, CFG)
    assert check.regressed is True
    assert check.z is not None and check.z < -5
    assert check.baseline == pytest.approx(sum(history) / 50)
    assert 900 < check.threshold < check.baseline


def test_big_z_but_small_change_does_not_alert() -> None:
    # Very tight history: a 2 % drop is many sigmas but below the 5 % minimum change.
    history = [1000.0, 1000.1, 999.9, 1000.05, 999.95, 1000.0]
    check = zscore_check("throughput", 980.0, history, 5.0, 0.05)
    assert check.z < -100 and check.regressed is False


def test_constant_history_uses_the_percent_rule() -> None:
    history = [500.0] * 10
    noise = zscore_check("throughput", 490.0, history, 5.0, 0.05)
    drop = zscore_check("throughput", 450.0, history, 5.0, 0.05)
    assert noise.z is None and noise.regressed is False
    assert drop.z is None and drop.regressed is True and "constant history" in drop.detail


def test_latency_higher_is_worse() -> None:
    history = [10.0, 10.1, 9.9, 10.05, 9.95, 10.0]
    worse = perf_check("latency_p99", 12.0, history, None, CFG)
    better = perf_check("latency_p99", 8.0, history, None, CFG)
    assert worse.regressed is True and worse.z < -5  # normalised: negative = worse
    assert worse.threshold > worse.baseline
    assert better.regressed is False and better.z > 5


def test_little_history_uses_reference_else_no_verdict() -> None:
    ok = perf_check("throughput", 2550.0, [2600.0, 2590.0], 2588.56, CFG)
    slow = perf_check("throughput", 2400.0, [], 2588.56, CFG)
    none = perf_check("throughput", 2400.0, [2600.0] * 4, None, CFG)
    assert (ok.rule, ok.regressed) == ("perf_reference", False)
    assert (slow.rule, slow.regressed, slow.baseline) == ("perf_reference", True, 2588.56)
    assert slow.threshold == pytest.approx(2588.56 * 0.95)
    assert none.regressed is None and "no perf verdict" in none.detail and "4 prior" in none.detail


def test_reference_observed_is_the_card_figure() -> None:
    check = perf_check("throughput", 650.0, [], 2588.56, CFG, reference_observed=2600.0)
    assert check.regressed is False and check.observed == 2600.0


def test_accuracy_history_median_and_drop() -> None:
    history = [94.4, 94.5, 94.6, 94.5, 80.0]  # one outlier does not move the median
    assert accuracy_history_check("rank1", 94.3, history, 0.3).regressed is False
    drop = accuracy_history_check("rank1", 93.0, history, 0.3)
    assert drop.regressed is True and drop.baseline == 94.5
    assert accuracy_history_check("rank1", 93.0, [], 0.3).regressed is None


def test_batch_invariance_anchor() -> None:
    checks = dict(batch_invariance_checks("rank1", {1: 94.50, 4: 94.55, 16: 94.35}, 0.1))
    assert set(checks) == {4, 16}
    assert checks[4].regressed is False and checks[16].regressed is True
    no_bs1 = dict(batch_invariance_checks("mAP", {8: 85.9, 16: 85.9}, 0.1))
    assert set(no_bs1) == {16} and no_bs1[16].baseline == 85.9
    assert batch_invariance_checks("mAP", {16: 85.9}, 0.1) == []


def test_env_diff_flattens() -> None:
    before = {"environment": {"onnxruntime": "1.31", "host": "a"}, "model_sha256": "x", "config_overrides": {}}
    after = {"environment": {"onnxruntime": "1.32", "host": "a"}, "model_sha256": "x", "config_overrides": {"K": 1}}
    assert env_diff(before, after) == {"config_overrides.K": [None, 1], "environment.onnxruntime": ["1.31", "1.32"]}
    assert env_diff(None, after) == {}


def test_bad_inputs_raise() -> None:
    with pytest.raises(ResultsError, match="unknown metric"):
        rule_config.metric_spec("fps")
    with pytest.raises(ResultsError, match="REFERENCE_THROUGHPUT"):
        RuleConfig(reference_throughput=(("ascend310", 1, 2),))


# ---------------------------------------------------------------------- through the store
def _history(store, n: int, *, sigma: float = 8.0, seed: int = 0, acc: bool = True, start: float = 0) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    for i in range(n):
        record_run(
            store,
            f"h{i}",
            start + i,
            [perf_row(1000 + rng.gauss(0, sigma))],
            [acc_row(94.5 + rng.gauss(0, 0.05))] if acc else [],
        )


def test_store_steady_noise_no_alert(store) -> None:  # type: ignore[no-untyped-def]
    _history(store, 12)
    verdict = record_run(store, "new", 20, [perf_row(990.0)], [acc_row(94.45)])
    assert verdict.alerts == [], verdict.summary_lines()
    assert verdict.status == "success"
    perf = [v for v in verdict.verdicts if v.rule == "perf_history"]
    assert {v.metric for v in perf} == {"throughput", "latency_p99"} and all(v.history == 12 for v in perf)


def test_store_short_history_ten_percent_drop_alerts_with_env_diff(store) -> None:  # type: ignore[no-untyped-def]
    # 6 runs: too short for change-point detection, the single-point z-score rule judges.
    _history(store, 6)
    env = {"host": "ci-1", "python": "3.11.2", "onnxruntime": "1.33.0", "torch": "2.13.0"}
    verdict = record_run(
        store, "new", 20, [perf_row(900.0, tool_versions={"onnxruntime": "1.33.0"})], [acc_row(94.5)], env=env
    )
    thr = [a for a in verdict.alerts if a.metric == "throughput"]
    assert len(thr) == 1
    alert = thr[0]
    assert alert.rule == "perf_history" and alert.observed == 900.0 and alert.change_run is None
    assert alert.baseline == pytest.approx(1000, abs=10) and alert.z < -5
    assert alert.series_key == "onnxruntime/cpu/bs16/fp32/real"
    assert alert.env_diff == {
        "environment.onnxruntime": ["1.32.0", "1.33.0"],
        "tool_versions.onnxruntime": ["1.32.0", "1.33.0"],
    }
    assert "1.32.0' -> '1.33.0'" in alert.message and "h5" in alert.message
    assert verdict.status == "regressed" and store.get_run("new").status == "regressed"


def test_store_accuracy_drop_alerts(store) -> None:  # type: ignore[no-untyped-def]
    _history(store, 6)
    verdict = record_run(store, "new", 20, [], [acc_row(93.0, 85.8)])
    by_rule = {(a.rule, a.metric) for a in verdict.alerts}
    assert ("accuracy_history", "rank1") in by_rule  # 1.5 pt below the median
    assert ("accuracy_reference", "rank1") in by_rule  # and below the 94.5 reference by > 1 pt
    assert ("accuracy_history", "mAP") not in by_rule
    hist = next(a for a in verdict.alerts if a.rule == "accuracy_history")
    assert hist.baseline == pytest.approx(94.5, abs=0.1) and hist.threshold == pytest.approx(hist.baseline - 0.3)


def test_store_reference_only_when_configured(store) -> None:  # type: ignore[no-untyped-def]
    no_ref = RuleConfig.from_cfg(use_reference=False)
    verdict = record_run(store, "demo", 0, [], [acc_row(40.0, 20.0)], rules=no_ref)
    assert not [a for a in verdict.alerts if a.rule == "accuracy_reference"]
    verdict = store.evaluate_run("demo", RuleConfig.from_cfg())
    assert {a.metric for a in verdict.alerts if a.rule == "accuracy_reference"} == {"rank1", "mAP"}


def test_store_little_history_reference_and_no_verdict(store) -> None:  # type: ignore[no-untyped-def]
    ascend = dict(target="ascend310", device_kind="Ascend310", precision="fp16", latency_p99_ms=None)
    for i in range(2):  # below PERF_MIN_HISTORY
        record_run(store, f"a{i}", i, [perf_row(640.0, card_throughput=2590.0, **ascend)])
    verdict = record_run(
        store,
        "new",
        5,
        [perf_row(560.0, card_throughput=2240.0, **ascend), perf_row(900.0, target="openvino")],
    )
    ref = [a for a in verdict.alerts if a.rule == "perf_reference"]
    assert len(ref) == 1 and ref[0].observed == 2240.0 and ref[0].baseline == 2588.56
    assert ref[0].threshold == pytest.approx(2588.56 * 0.95)
    lines = verdict.summary_lines()
    assert any(
        line.startswith("no verdict: openvino/cpu/bs16/fp32/real throughput") and "no reference" in line
        for line in lines
    ), lines
    assert not any("ascend310" in line and "latency" in line for line in lines)  # latency not measured


def test_store_batch_invariance(store) -> None:  # type: ignore[no-untyped-def]
    verdict = record_run(
        store, "r", 0, [], [acc_row(94.5, batch_size=1), acc_row(94.5, batch_size=4), acc_row(94.3, batch_size=16)]
    )
    inv = [a for a in verdict.alerts if a.rule == "batch_invariance"]
    assert [(a.series_key, a.metric) for a in inv] == [("onnxruntime/bs16/fp32", "rank1")]
    assert inv[0].baseline == 94.5 and inv[0].observed == 94.3


def test_store_latency_p99_rise(store) -> None:  # type: ignore[no-untyped-def]
    for i in range(8):
        record_run(store, f"h{i}", i, [perf_row(1000.0 + i % 3, latency_p99_ms=16.0 + (i % 3) * 0.05)])
    verdict = record_run(store, "new", 10, [perf_row(1001.0, latency_p99_ms=20.0)])
    assert [(a.rule, a.metric) for a in verdict.alerts] == [("perf_history", "latency_p99")]
    assert verdict.alerts[0].threshold > verdict.alerts[0].baseline


def test_only_prior_good_runs_are_baselines(store) -> None:  # type: ignore[no-untyped-def]
    _history(store, 6, acc=False)
    # A failed run, a still-running run and a later run must not count as history.
    record_run(store, "failed", 7, [perf_row(100.0)], status="failed", evaluate=False)
    store.start_run(dataclasses.replace(_info("running", 8)))
    store.record_perf("running", perf_row(100.0))
    record_run(store, "later", 30, [perf_row(100.0)], evaluate=False)
    verdict = record_run(store, "new", 9, [perf_row(1000.0)])
    thr = next(v for v in verdict.verdicts if v.metric == "throughput")
    assert thr.history == 6 and thr.regressed is False


def _info(key: str, day: float):  # type: ignore[no-untyped-def]
    from datetime import timedelta

    from results_helpers import T0

    from reid_tasks.results import RunInfo

    return RunInfo(run_key=key, started_at=T0 + timedelta(days=day))


def test_reevaluation_replaces_alerts_and_keeps_ack(store) -> None:  # type: ignore[no-untyped-def]
    _history(store, 6)
    verdict = record_run(store, "new", 20, [perf_row(800.0)], [acc_row(93.0)])
    ids = {a.id for a in verdict.alerts}
    assert len(ids) >= 3
    again = store.evaluate_run("new", RuleConfig.from_cfg())
    assert {a.id for a in again.alerts} == ids and len(store.alerts(run_key="new")) == len(ids)
    store.ack(min(ids), by="tester")
    # The perf row is re-recorded at the old level: its alerts go, the acknowledged accuracy one stays acked.
    store.record_perf("new", perf_row(1000.0))
    third = store.evaluate_run("new", RuleConfig.from_cfg())
    assert {a.metric for a in third.alerts} <= {"rank1"}
    kept = {a.id: a for a in third.alerts}
    if min(ids) in kept:
        assert kept[min(ids)].acknowledged_by == "tester"
    assert len(store.alerts(run_key="new")) == len(third.alerts)


def test_ack_of_last_alert_accepts_the_run_as_baseline(store) -> None:  # type: ignore[no-untyped-def]
    _history(store, 6, acc=False)
    verdict = record_run(store, "drop1", 10, [perf_row(850.0)])
    assert verdict.status == "regressed"
    for alert in verdict.alerts:
        store.ack(alert.id)
    assert store.get_run("drop1").status == "success"
    assert store.alerts(open_only=True) == []


def test_parity_check_not_evaluated_is_no_verdict_not_an_alert():
    from reid_tasks.results.rules import parity_checks

    detail = {
        "checks": [
            {"measure": "min_cosine", "value": 0.9991, "limit": 0.99, "passed": True},
            {"measure": "rank1_drop", "value": None, "limit": 0.5, "passed": None},
        ]
    }
    checks = parity_checks("onnxruntime bs1 int8", True, detail)
    assert [(c.metric, c.regressed) for c in checks] == [("min_cosine", False), ("rank1_drop", None)]
    assert "not evaluated" in checks[1].detail
    failed = parity_checks(
        "onnxruntime bs1 int8",
        False,
        {"checks": [{"measure": "min_cosine", "value": 0.97, "limit": 0.99, "passed": False}]},
    )
    assert [c.regressed for c in failed] == [True]
    assert "0.97" in failed[0].detail and "0.99" in failed[0].detail
