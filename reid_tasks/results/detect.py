"""Change detection over one metric series: pure functions of plain numbers (no database, no session).

A *series* is the values of one metric of one series identity, oldest first, optionally with the run key of
each value. Every detector answers the question a nightly check asks after each new run: "is the newest
level worse than before, and since which run?" -- :meth:`Detector.check` sees the values up to and including
the newest run and returns a :class:`Change` (an alert) or None. ``start`` is where the accepted baseline
begins (values before it are ignored: an acknowledged change restarts the baseline at its change run).

Detectors (compared by ``benchmarks/bench_detect.py``; the product uses :data:`DEFAULT`):

- :class:`ZScoreRule`: today's rule (``rules.perf_check``: Conbench z <= -5 over the last 100 AND a >= 5 %
  worse change). Names the newest run as the change.
- :class:`WindowedWelch`: Welch's t-test, the last k runs against the k before, with a minimum effect.
- :class:`RupturesPelt`: PELT (ruptures' C kernel implementation, l2 cost) over a trailing window, penalty
  from the series' own noise (MAD of first differences); alerts when its last segment is worse.
- :class:`RobustChange` (the default): the change run located by a robust (L1) two-segment split of the
  recent runs, confirmed by three tests that must all pass: an exact one-sided Mann-Whitney test (new runs
  vs the window before the split; rank-based, so bimodal "bad nights" already seen before are not a new
  level), a robust z-score of the new level without its single worst run (MAD scale; one outlier night
  never carries an alert) and a minimum effect. At least ``min_post`` runs at the new level are required
  (2 for perf: a single bad night is indistinguishable from a step; 1 for deterministic accuracy series).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import statistics
from collections.abc import Sequence
from typing import Protocol

from ..errors import ResultsError

MAD_TO_SIGMA = 1.4826


@dataclasses.dataclass(frozen=True)
class Change:
    """A detected worsening: the level changed at ``index`` (position in the series; ``run_key`` when keys were
    given). ``before`` / ``after``: the level (median) before and from the change run on; ``rel_change`` =
    (after - before) / |before| (sign as measured, so a throughput drop and a latency rise have opposite
    signs); ``p_value`` of the detector's test when it has one, ``score`` its statistic (z, t or cost gain)."""

    detector: str
    index: int
    run_key: str | None
    before: float
    after: float
    rel_change: float
    p_value: float | None
    score: float | None
    n_before: int
    n_after: int

    def describe(self, unit: str = "") -> str:
        unit = f" {unit}" if unit else ""
        p = "" if self.p_value is None else f", p {self.p_value:.2g}"
        score = "" if self.score is None else f", score {self.score:.2f}"
        at = self.run_key if self.run_key is not None else f"#{self.index}"
        return (
            f"level changed at run {at}: {self.before:.4g}{unit} (median of {self.n_before} runs before) -> "
            f"{self.after:.4g}{unit} (median of {self.n_after} runs from it on), {self.rel_change * 100:+.1f} %"
            f"{p}{score} [{self.detector}]"
        )


class Detector(Protocol):
    name: str

    def check(
        self, values: Sequence[float], *, higher_is_better: bool, keys: Sequence[str] | None = None, start: int = 0
    ) -> Change | None: ...


def _oriented(values: Sequence[float], higher_is_better: bool, start: int) -> list[float]:
    """The values from ``start`` on, negated for lower-is-better metrics, so that "worse" is always "lower"."""
    if start < 0 or start > len(values):
        raise ResultsError(f"baseline start {start} outside the series of {len(values)} values")
    sign = 1.0 if higher_is_better else -1.0
    out = []
    for i, v in enumerate(values[start:], start):
        if v is None or not math.isfinite(float(v)):
            raise ResultsError(f"series value #{i} is {v!r}; detectors need finite numbers")
        out.append(sign * float(v))
    return out


def _change(
    name: str,
    y: list[float],
    tau: int,
    pre: Sequence[float],
    post: Sequence[float],
    higher_is_better: bool,
    keys: Sequence[str] | None,
    start: int,
    p_value: float | None,
    score: float | None,
    *,
    robust: bool = True,
) -> Change:
    sign = 1.0 if higher_is_better else -1.0
    center = statistics.median if robust else statistics.fmean
    before, after = sign * center(pre), sign * center(post)
    index = start + tau
    return Change(
        detector=name,
        index=index,
        run_key=None if keys is None else str(keys[index]),
        before=before,
        after=after,
        rel_change=(after - before) / abs(before) if before else math.copysign(math.inf, after - before),
        p_value=p_value,
        score=score,
        n_before=len(pre),
        n_after=len(post),
    )


def _worse_enough(before: float, after: float, min_effect: float, relative: bool) -> bool:
    """``after`` is below ``before`` (oriented values) by at least ``min_effect`` (a fraction or absolute)."""
    drop = before - after
    return drop >= (min_effect * abs(before) if relative else min_effect) and drop > 0


# ----------------------------------------------------------------------------------------------- today's rule
@dataclasses.dataclass(frozen=True)
class ZScoreRule:
    """Today's perf_history rule (``rules.zscore_check``) applied to the newest value."""

    z: float = 5.0
    min_change: float = 0.05
    lookback: int = 100
    min_history: int = 5
    name: str = "today (z<=-5 & >=5 %)"

    def check(
        self, values: Sequence[float], *, higher_is_better: bool, keys: Sequence[str] | None = None, start: int = 0
    ) -> Change | None:
        from .rules import zscore_check

        y = _oriented(values, True, start)  # zscore_check orients by metric
        n = len(y)
        history = y[max(0, n - 1 - self.lookback) : n - 1]
        if len(history) < max(self.min_history, 2):
            return None
        metric = "throughput" if higher_is_better else "latency_p99"
        c = zscore_check(metric, y[-1], history[::-1], self.z, self.min_change)
        if not c.regressed:
            return None
        return _change(self.name, y, n - 1, history, [y[-1]], True, keys, start, None, c.z, robust=False)


# ----------------------------------------------------------------------------------------------- Welch
@dataclasses.dataclass(frozen=True)
class WindowedWelch:
    """One-sided Welch t-test of the last ``k`` runs against the ``k`` before, plus a minimum effect."""

    k: int = 5
    alpha: float = 0.01
    min_effect: float = 0.05
    relative: bool = True
    name: str = "welch(k=5)"

    def check(
        self, values: Sequence[float], *, higher_is_better: bool, keys: Sequence[str] | None = None, start: int = 0
    ) -> Change | None:
        y = _oriented(values, higher_is_better, start)
        n, k = len(y), self.k
        if n < 2 * k:
            return None
        pre, post = y[n - 2 * k : n - k], y[n - k :]
        m1, m2 = statistics.fmean(pre), statistics.fmean(post)
        if not _worse_enough(m1, m2, self.min_effect, self.relative):
            return None
        v1, v2 = statistics.variance(pre) / k, statistics.variance(post) / k
        se2 = v1 + v2
        if se2 == 0:
            t, p = math.inf, 0.0
        else:
            from scipy.stats import t as student_t

            t = (m1 - m2) / math.sqrt(se2)
            df = se2 * se2 / (v1 * v1 / (k - 1) + v2 * v2 / (k - 1))
            p = float(student_t.sf(t, df))
        if p > self.alpha:
            return None
        return _change(self.name, y, n - k, pre, post, higher_is_better, keys, start, p, t, robust=False)


# ----------------------------------------------------------------------------------------------- ruptures
def _diff_sigma(y: Sequence[float]) -> float:
    """Noise scale robust to level steps and drift: MAD of first differences / sqrt(2)."""
    d = [b - a for a, b in itertools.pairwise(y)]
    if not d:
        return 0.0
    med = statistics.median(d)
    return MAD_TO_SIGMA * statistics.median(abs(v - med) for v in d) / math.sqrt(2)


@dataclasses.dataclass(frozen=True)
class RupturesPelt:
    """ruptures' PELT (KernelCPD, linear kernel = l2 cost) on the last ``window`` runs, the series scaled by its
    own noise (MAD of first differences) so that the penalty is ``beta * log(n)`` in noise units. Alerts when
    the last segment starts within ``max_post`` runs, has >= ``min_post`` runs and is worse than the segment
    before by >= ``min_effect``."""

    beta: float = 8.0
    window: int = 60
    min_post: int = 2
    max_post: int = 10
    min_effect: float = 0.04
    relative: bool = True
    name: str = "ruptures PELT (l2)"

    def check(
        self, values: Sequence[float], *, higher_is_better: bool, keys: Sequence[str] | None = None, start: int = 0
    ) -> Change | None:
        import numpy as np
        import ruptures

        y = _oriented(values, higher_is_better, start)
        n = len(y)
        lo = max(0, n - self.window)
        w = y[lo:]
        if len(w) < 2 * self.min_post + 4:
            return None
        sigma = _diff_sigma(w) or 1e-9 * (abs(statistics.fmean(w)) or 1.0)
        signal = (np.asarray(w) / sigma).reshape(-1, 1)
        bkps = (
            ruptures.KernelCPD(kernel="linear", min_size=self.min_post)
            .fit(signal)
            .predict(pen=self.beta * math.log(len(w)))
        )
        if len(bkps) < 2:
            return None
        tau, prev = bkps[-2], (bkps[-3] if len(bkps) >= 3 else 0)
        n_post = len(w) - tau
        if not self.min_post <= n_post <= self.max_post:
            return None
        pre, post = w[prev:tau], w[tau:]
        m1, m2 = statistics.fmean(pre), statistics.fmean(post)
        if not _worse_enough(m1, m2, self.min_effect, self.relative):
            return None
        score = (m1 - m2) / sigma
        return _change(self.name, y, lo + tau, pre, post, higher_is_better, keys, start, None, score, robust=False)


# ----------------------------------------------------------------------------------------------- robust change
@functools.lru_cache(maxsize=4096)
def _mw_cdf(n1: int, n2: int) -> tuple[float, ...]:
    """P(U <= u) for u = 0..n1*n2 under H0, U = #(post > pre) pairs (exact, no ties), from the count
    recurrence c(n1, n2, u) = c(n1 - 1, n2, u - n2) + c(n1, n2 - 1, u) (the largest value is a pre or a post
    value)."""
    # counts[a][u] for the current n2 column, a = 0..n1; start with n2 = 0: one arrangement, U = 0.
    prev = [[1] for _ in range(n1 + 1)]
    for b in range(1, n2 + 1):
        cur: list[list[int]] = [[1]]  # a = 0: U = 0
        for a in range(1, n1 + 1):
            left = cur[a - 1]  # c(a - 1, b, u - b)
            up = prev[a]  # c(a, b - 1, u)
            size = a * b + 1
            row = [0] * size
            for u, c in enumerate(up):
                row[u] += c
            for u, c in enumerate(left):
                row[u + b] += c
            cur.append(row)
        prev = cur
    counts = prev[n1]
    total = sum(counts)
    acc, out = 0, []
    for c in counts:
        acc += c
        out.append(acc / total)
    return tuple(out)


def mann_whitney_less(post: Sequence[float], pre: Sequence[float]) -> float:
    """One-sided exact p-value that ``post`` is stochastically smaller than ``pre`` (ties count 1/2, rounded
    up so that ties never make a result more significant)."""
    n1, n2 = len(pre), len(post)
    if n1 == 0 or n2 == 0:
        raise ResultsError(f"Mann-Whitney needs two non-empty samples, got {n2} and {n1}")
    u2 = 0.0
    for a in post:
        for b in pre:
            u2 += 1.0 if a > b else 0.5 if a == b else 0.0
    return _mw_cdf(n1, n2)[math.ceil(u2)]


def _l1_cost(seg: Sequence[float]) -> float:
    med = statistics.median(seg)
    return sum(abs(v - med) for v in seg)


@dataclasses.dataclass(frozen=True)
class RobustChange:
    """Robust change-point detector (see the module docstring).

    ``min_effect``: the smallest worsening that alerts, a fraction of the level (``relative``) or in the
    metric's unit; ``z``: robust z of the new level (its mean without its worst run) against the median of
    the ``window`` runs before the split, scale = max(MAD sigma, ``noise_floor`` x level); ``alpha``: the
    Mann-Whitney test's level; the split is searched among the last ``max_post`` runs and needs ``min_pre``
    runs before it.
    """

    min_effect: float = 0.04
    relative: bool = True
    z: float = 4.0
    alpha: float = 0.01
    min_post: int = 2
    max_post: int = 10
    window: int = 40
    min_pre: int = 8
    noise_floor: float = 1e-6
    drop_worst: bool = True
    name: str = "robust change point"

    def __post_init__(self) -> None:
        if not 1 <= self.min_post <= self.max_post:
            raise ResultsError(f"RobustChange: need 1 <= min_post <= max_post, got {self.min_post}, {self.max_post}")
        if self.min_pre < 1 or self.window < self.min_pre:
            raise ResultsError(f"RobustChange: need 1 <= min_pre <= window, got {self.min_pre}, {self.window}")

    def ready(self, n: int) -> bool:
        """Whether a series of ``n`` values (the newest included) is long enough for this detector to be able
        to alert at all (enough runs before a split, and a Mann-Whitney p-value <= ``alpha`` attainable)."""
        for n_post in range(self.min_post, self.max_post + 1):
            n_pre = min(n - n_post, self.window)
            if n_pre >= self.min_pre and (self.alpha >= 1 or _mw_cdf(n_pre, n_post)[0] <= self.alpha):
                return True
        return False

    def locate(self, y: Sequence[float]) -> int | None:
        """The split (start of the new level) among the last ``max_post`` runs that minimises the two-segment
        L1 cost over the window, or None when the series is too short."""
        n = len(y)
        first = max(self.min_pre, n - self.max_post)
        last = n - self.min_post
        if first > last:
            return None
        lo = max(0, first - self.window)
        best, best_cost = None, math.inf
        for tau in range(first, last + 1):
            cost = _l1_cost(y[lo:tau]) + _l1_cost(y[tau:])
            if cost < best_cost:
                best, best_cost = tau, cost
        return best

    def check(
        self, values: Sequence[float], *, higher_is_better: bool, keys: Sequence[str] | None = None, start: int = 0
    ) -> Change | None:
        y = _oriented(values, higher_is_better, start)
        n = len(y)
        # Cheap screen: the newest run must already be worse than the recent median by min_effect / 2.
        recent = y[max(0, n - self.max_post - self.window) : n - 1]
        if len(recent) < self.min_pre or not _worse_enough(
            statistics.median(recent), y[-1], self.min_effect / 2, self.relative
        ):
            return None
        tau = self.locate(y)
        if tau is None:
            return None
        pre, post = y[max(0, tau - self.window) : tau], y[tau:]
        level = statistics.median(pre)
        after = statistics.median(post)
        if not _worse_enough(level, after, self.min_effect, self.relative):
            return None
        sigma = MAD_TO_SIGMA * statistics.median(abs(v - level) for v in pre)
        sigma = max(sigma, self.noise_floor * abs(level), 1e-12)
        kept = sorted(post)[1:] if self.drop_worst and len(post) >= 2 else list(post)  # without the worst run
        z = (level - statistics.fmean(kept)) / (sigma * math.sqrt(math.pi / 2 / len(pre) + 1 / len(kept)))
        if z < self.z:
            return None
        p = mann_whitney_less(post, pre)
        # A series with no spread before the split has no meaningful rank test: the effect and z decide.
        if p > self.alpha and max(pre) > min(pre):
            return None
        return _change(self.name, y, tau, pre, post, higher_is_better, keys, start, p, z)


DEFAULT = RobustChange()


def perf_detector(min_effect: float, z: float, alpha: float, window: int) -> RobustChange:
    """The product's detector for perf series (noisy: >= 2 runs at a new level; ``min_effect`` a fraction)."""
    return dataclasses.replace(DEFAULT, min_effect=min_effect, z=z, alpha=alpha, window=window)


def accuracy_detector(max_drop: float, window: int, z: float) -> RobustChange:
    """The product's detector for accuracy series: one identity's accuracy is deterministic up to tool
    versions, so one run at a new level is a change (no rank test: its p-value needs several new runs);
    ``max_drop`` in points (absolute), the level is the median of up to ``window`` runs."""
    return dataclasses.replace(
        DEFAULT, min_effect=max_drop, relative=False, z=z, alpha=1.0, min_post=1, min_pre=1, window=window
    )
