"""What the regression rules judge and with which limits: the metrics (unit, better direction, perf or
accuracy) and ``RuleConfig``, the thresholds and reference values read from VALIDATION.RULES and
VALIDATION.REFERENCE. The rules themselves are in ``rules``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import ResultsError
from .records import _Record


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    name: str
    unit: str
    higher_is_better: bool
    kind: str  # 'perf' | 'accuracy'

    def worse_by(self, observed: float, baseline: float) -> float:
        """How much worse ``observed`` is than ``baseline`` in the metric's unit (negative = better)."""
        return baseline - observed if self.higher_is_better else observed - baseline

    @property
    def sign(self) -> int:
        return 1 if self.higher_is_better else -1


METRICS: dict[str, MetricSpec] = {
    "throughput": MetricSpec("throughput", "samples/s", True, "perf"),
    "latency_p99": MetricSpec("latency_p99", "ms", False, "perf"),
    "rank1": MetricSpec("rank1", "%", True, "accuracy"),
    "rank5": MetricSpec("rank5", "%", True, "accuracy"),
    "rank10": MetricSpec("rank10", "%", True, "accuracy"),
    "mAP": MetricSpec("mAP", "%", True, "accuracy"),
    "mINP": MetricSpec("mINP", "%", True, "accuracy"),
}
ACCURACY_RULE_METRICS = ("rank1", "mAP")
PERF_RULE_METRICS = ("throughput", "latency_p99")


def metric_spec(name: str) -> MetricSpec:
    try:
        return METRICS[name]
    except KeyError:
        raise ResultsError(f"unknown metric {name!r}; valid: {sorted(METRICS)}") from None


@dataclasses.dataclass(frozen=True)
class RuleConfig(_Record):
    """Thresholds of the rules (defaults = VALIDATION.RULES defaults) and the reference values.

    ``reference_throughput``: ((target, device_kind, batch, samples/s[, precision]), ...); an entry without a
    precision applies to every precision. ``reference_rank1`` / ``reference_map`` in percent, None = no
    reference configured for the model under test (the accuracy_reference rule is skipped).
    """

    ref_acc_tolerance: float = 1.0
    history_acc_drop: float = 0.3
    history_acc_runs: int = 10
    batch_invariance: float = 0.1
    perf_z: float = 5.0
    perf_min_change: float = 0.05
    perf_lookback: int = 100
    perf_min_history: int = 5
    ref_perf_tolerance: float = 0.05
    change_min_effect: float = 0.04
    change_z: float = 4.0
    change_alpha: float = 0.01
    change_window: int = 40
    reference_throughput: tuple[tuple[Any, ...], ...] = ()
    reference_rank1: float | None = None
    reference_map: float | None = None
    reference_rerank_rank1: float | None = None
    reference_rerank_map: float | None = None

    def __post_init__(self) -> None:
        entries = []
        for entry in self.reference_throughput:
            entry = tuple(entry)
            if len(entry) not in (4, 5):
                raise ResultsError(
                    "REFERENCE_THROUGHPUT entries must be [target, device_kind, batch, samples/s(, precision)], "
                    f"got {list(entry)!r}"
                )
            entries.append((str(entry[0]), str(entry[1]), int(entry[2]), float(entry[3]), *entry[4:]))
        object.__setattr__(self, "reference_throughput", tuple(entries))
        for name in ("perf_lookback", "perf_min_history", "history_acc_runs", "change_window"):
            if int(getattr(self, name)) < 1:
                raise ResultsError(f"RuleConfig.{name} must be >= 1, got {getattr(self, name)!r}")

    @classmethod
    def from_cfg(cls, cfg: Any = None, *, use_reference: bool = True) -> RuleConfig:
        """From VALIDATION.RULES and VALIDATION.REFERENCE of a config (``load_config()`` when None).

        ``use_reference=False`` when the model under test is not the one the reference accuracy belongs to.
        A reference value <= 0 counts as not configured.
        """
        if cfg is None:
            from ..config import load_config

            cfg = load_config()
        r = cfg.VALIDATION.RULES
        ref = cfg.VALIDATION.REFERENCE
        rank1 = float(ref.RANK1) if use_reference and ref.RANK1 and ref.RANK1 > 0 else None
        map_ = float(ref.MAP) if use_reference and ref.MAP and ref.MAP > 0 else None
        # Every threshold field is VALIDATION.RULES.<FIELD NAME> as the type of its default (int or float).
        thresholds = {
            f.name: type(f.default)(getattr(r, f.name.upper()))
            for f in dataclasses.fields(cls)
            if not f.name.startswith("reference_")
        }
        return cls(
            **thresholds,
            reference_throughput=tuple(tuple(e) for e in r.REFERENCE_THROUGHPUT),
            reference_rank1=rank1,
            reference_map=map_,
        )

    def reference_for(self, target: str, device_kind: str, batch_size: int, precision: str) -> float | None:
        """Configured reference throughput of a series, or None."""
        for entry in self.reference_throughput:
            t, kind, batch, fps = entry[:4]
            if (
                t == target
                and kind.lower() == device_kind.lower()
                and batch == batch_size
                and (len(entry) < 5 or entry[4] == precision)
            ):
                return fps
        return None

    def reference_accuracy(self, metric: str, re_ranking: bool = False) -> float | None:
        """The reference of an accuracy metric; re-ranked rows have their own (``reference_rerank_*``: the
        published 95.4 / 94.2 of the released checkpoint), None when none applies."""
        if re_ranking:
            return {"rank1": self.reference_rerank_rank1, "mAP": self.reference_rerank_map}.get(metric)
        return {"rank1": self.reference_rank1, "mAP": self.reference_map}.get(metric)
