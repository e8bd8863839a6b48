"""Change detectors (reid_tasks/results/detect.py): pure functions over plain series."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import pytest
from scipy.stats import mannwhitneyu

from reid_tasks.errors import ResultsError
from reid_tasks.results.detect import (
    DEFAULT,
    RobustChange,
    RupturesPelt,
    WindowedWelch,
    ZScoreRule,
    accuracy_detector,
    mann_whitney_less,
)

KEYS = [f"r{i}" for i in range(200)]


def _noise(n: int, level: float = 1000.0, cv: float = 0.01, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [level * (1 + cv * rng.gauss(0, 1)) for _ in range(n)]


def _online(detector, values, higher_is_better=True):  # type: ignore[no-untyped-def]
    """(run index, change) of the first alert when the runs arrive one at a time, else None."""
    for t in range(1, len(values)):
        change = detector.check(values[: t + 1], higher_is_better=higher_is_better, keys=KEYS[: t + 1])
        if change is not None:
            return t, change
    return None


def test_step_alerts_at_the_second_low_run_and_names_the_first() -> None:
    values = _noise(30) + [v * 0.9 for v in _noise(5, seed=1)]
    t, change = _online(DEFAULT, values)
    assert t == 31  # the change run is 30: one low run alone could be a bad night
    assert change.index == 30 and change.run_key == "r30"
    assert change.before == pytest.approx(1000, rel=0.01) and change.after == pytest.approx(900, rel=0.02)
    assert change.rel_change == pytest.approx(-0.10, abs=0.02)
    assert change.p_value < 0.01 and change.score > DEFAULT.z
    assert (change.n_before, change.n_after) == (30, 2)
    assert "level changed at run r30" in change.describe("samples/s")


def test_outlier_night_and_recovery_do_not_alert() -> None:
    values = _noise(40)
    values[30] *= 0.7  # one 30 % outlier night
    assert _online(DEFAULT, values) is None
    up = _noise(30) + [v * 1.2 for v in _noise(10, seed=2)]  # an improvement is no regression
    assert _online(DEFAULT, up) is None


def test_bad_nights_seen_before_are_not_a_new_level() -> None:
    rng = random.Random(3)
    values = [1000 * (0.8 if i % 5 == 0 else 1.0) * (1 + 0.01 * rng.gauss(0, 1)) for i in range(40)]
    values += [800.0, 805.0]  # two bad nights in a row, at the level bad nights always had
    assert DEFAULT.check(values, higher_is_better=True) is None
    # The same two nights without the rank test: the robust z alone would call it a change.
    assert RobustChange(alpha=1.0).check(values, higher_is_better=True) is not None


def test_latency_rise_is_worse() -> None:
    values = _noise(30, level=16.0) + [v * 1.15 for v in _noise(3, level=16.0, seed=4)]
    change = DEFAULT.check(values, higher_is_better=False)
    assert change is not None and change.index == 30 and change.rel_change == pytest.approx(0.15, abs=0.03)
    assert DEFAULT.check([v * 0.8 for v in values], higher_is_better=False) is not None  # scale-free
    faster = [*_noise(30, level=16.0), 12.0, 12.1, 11.9]
    assert DEFAULT.check(faster, higher_is_better=False) is None


def test_small_changes_and_noise_below_the_minimum_effect() -> None:
    values = _noise(30, cv=0.002) + [v * 0.98 for v in _noise(5, cv=0.002, seed=5)]
    assert DEFAULT.check(values, higher_is_better=True) is None  # significant, but 2 % < 4 %
    constant = [500.0] * 20 + [470.0, 470.0]
    change = DEFAULT.check(constant, higher_is_better=True)
    assert change is not None and change.index == 20  # no spread: the effect decides


def test_baseline_start_ignores_older_runs() -> None:
    values = _noise(30) + [v * 0.8 for v in _noise(5, seed=6)]
    assert DEFAULT.check(values, higher_is_better=True) is not None
    assert DEFAULT.check(values, higher_is_better=True, start=30) is None  # the new level was accepted
    change = DEFAULT.check(values, higher_is_better=True, keys=KEYS[:35], start=20)
    assert change is not None and change.index == 30 and change.run_key == "r30"  # index into the full series
    assert change.n_before == 10


def test_accuracy_detector_alerts_on_one_run() -> None:
    det = accuracy_detector(0.3, 10, 4.0)
    hist = [94.5, 94.5, 94.52, 94.5, 94.48]
    change = det.check([*hist, 94.0], higher_is_better=True, keys=KEYS[:6])
    assert change is not None and change.run_key == "r5" and change.after == 94.0
    assert det.check([*hist, 94.3], higher_is_better=True) is None  # 0.2 pt < 0.3 pt
    assert det.check([94.5, 93.0], higher_is_better=True) is not None  # one earlier run is enough
    assert det.ready(2) and not det.ready(1)


def test_ready_needs_an_attainable_p_value() -> None:
    assert not DEFAULT.ready(10)
    assert DEFAULT.ready(11)  # 8 runs before, 3 after: exact p 6 / (9 * 10 * 11) < 0.01


def test_mann_whitney_matches_scipy() -> None:
    rng = random.Random(7)
    for n1, n2 in ((10, 2), (30, 3), (40, 10), (8, 1)):
        pre = [rng.gauss(0, 1) for _ in range(n1)]
        post = [rng.gauss(-1, 1) for _ in range(n2)]
        expected = mannwhitneyu(post, pre, alternative="less", method="exact").pvalue
        assert mann_whitney_less(post, pre) == pytest.approx(expected)


def test_other_detectors_run() -> None:
    values = _noise(30) + [v * 0.8 for v in _noise(6, seed=8)]
    for det in (ZScoreRule(), WindowedWelch(k=3), RupturesPelt()):
        hit = _online(det, values)
        assert hit is not None and 30 <= hit[0] <= 35, det.name
    assert _online(ZScoreRule(), _noise(60)) is None


def test_bad_input_is_refused() -> None:
    with pytest.raises(ResultsError, match="series value #2"):
        DEFAULT.check([1.0, 2.0, float("nan")], higher_is_better=True)
    with pytest.raises(ResultsError, match="baseline start 5 outside"):
        DEFAULT.check([1.0, 2.0], higher_is_better=True, start=5)
    with pytest.raises(ResultsError, match="min_post"):
        RobustChange(min_post=0)


def test_benchmark_default_meets_the_goal_on_a_small_sample() -> None:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_detect.py"
    spec = importlib.util.spec_from_file_location("bench_detect", path)
    bench = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["bench_detect"] = bench  # its dataclasses look their module up
    spec.loader.exec_module(bench)  # type: ignore[union-attr]
    rng = random.Random(11)
    series = [bench.generate(rng) for _ in range(300)]
    assert series[0].values == bench.generate(random.Random(11)).values  # fixed seed, same series
    res = bench.evaluate(DEFAULT, series)
    assert res["fa_worst"] <= 1.0 and res["r10"] >= 0.9 and res["exact"] >= 0.85, res
    today = bench.evaluate(ZScoreRule(), series)
    assert res["r5"] > today["r5"]


def test_change_check_verdicts_name_their_baseline_runs() -> None:
    from reid_tasks.results.rules import change_check

    earlier = _noise(20)
    keys = KEYS[:23]
    assert change_check("throughput", 1000.0, earlier[:5], keys[:6], DEFAULT) is None  # too short: fallback
    steady = change_check("throughput", 1001.0, earlier, keys[:21], DEFAULT)
    assert steady.regressed is False and steady.baseline_runs == tuple(keys[19::-1]) and steady.change is None
    dropped = change_check("throughput", 880.0, [*earlier, 885.0, 879.0], keys, DEFAULT)
    assert dropped.regressed is True and dropped.change.run_key == "r20"
    assert dropped.baseline_runs == tuple(keys[19::-1]) and dropped.rule == "perf_history"
    assert dropped.threshold == pytest.approx(dropped.baseline * 0.96)
    with pytest.raises(ResultsError, match="3 run keys for 21 values"):
        change_check("throughput", 1.0, earlier, keys[:3], DEFAULT)
