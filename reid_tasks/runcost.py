"""What one benchmark task costs, and whether it fits its time limit, before it starts the dataset pass.

A benchmark task is one pass over the dataset (the features, and the end-to-end throughput) plus a bounded
pure-inference benchmark (``VALIDATION.BENCH.REPEATS`` x ``PURE_BATCHES`` batches: the stable throughput and
latency percentiles), so its cost grows with the dataset once, not ``REPEATS`` times. The pure benchmark runs
first: its measured throughput says how long the dataset pass will take; without it
``VALIDATION.BENCH.MIN_THROUGHPUT`` (the configured floor) stands in. When the pass cannot fit in what is left
of ``VALIDATION.BENCH.TASK_TIMEOUT_S`` (the benchmark task's execution timeout) the task stops with the figures
instead of running into the timeout an hour later; tools the target drives are given the derived timeout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .errors import RunWontFit

#: the dataset pass also reads the cache and (Ascend) writes/reads a file per image: allowance over pure inference
E2E_FACTOR = 3.0
#: fixed allowance per pass (tool start-up, model load, npu-smi checks)
PASS_OVERHEAD_S = 60.0


@dataclass(frozen=True)
class PassBudget:
    """The dataset pass of one artifact: expected and allowed seconds."""

    images: int
    throughput: float  # samples/s the estimate uses
    source: str  # where that throughput comes from
    expected_s: float  # images / throughput
    timeout_s: float  # expected (x E2E_FACTOR when measured by pure inference) + PASS_OVERHEAD_S
    left_s: float  # what the task has left

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def dataset_pass_budget(
    images: int, throughput: float | None, *, min_throughput: float, left_s: float, what: str
) -> PassBudget:
    """The budget of one pass over ``images`` at ``throughput`` (measured; None: the configured floor).

    RunWontFit names the artifact, the image count, the throughput and its source, the time needed and the
    time left, and the settings that change them.
    """
    if throughput and throughput > 0:  # pure inference: the pass also loads and writes, hence the factor
        thr, source, factor = float(throughput), "measured by the pure-inference benchmark (median)", E2E_FACTOR
    else:  # the configured floor is an end-to-end figure already
        thr, source, factor = float(min_throughput), "VALIDATION.BENCH.MIN_THROUGHPUT (nothing measured)", 1.0
    if thr <= 0:
        raise RunWontFit(f"{what}: no throughput to plan with (VALIDATION.BENCH.MIN_THROUGHPUT must be > 0)")
    expected = images / thr
    timeout = expected * factor + PASS_OVERHEAD_S
    budget = PassBudget(images, thr, source, expected, timeout, left_s)
    if timeout > left_s:
        raise RunWontFit(
            f"{what}: one pass over {images} images at {thr:.1f} img/s ({source}) needs up to "
            f"{_hms(timeout)} ({_hms(expected)} x {factor:g} + {PASS_OVERHEAD_S:g} s), but the "
            f"benchmark task has {_hms(left_s)} left of VALIDATION.BENCH.TASK_TIMEOUT_S. Raise "
            "TASK_TIMEOUT_S in the deployment config, use a larger batch or a faster target, or validate on a "
            "smaller dataset."
        )
    return budget


def _hms(seconds: float) -> str:
    s = math.ceil(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def inferences_per_artifact(
    images: int, batch_size: int, *, warmup: int, repeats: int, pure_batches: int, dataset_passes: int
) -> dict[str, int]:
    """Samples one benchmark task pushes through the model (static batches count their padding)."""
    batches = math.ceil(images / batch_size)
    data = (warmup + dataset_passes * batches) * batch_size
    pure = (warmup + repeats * pure_batches) * batch_size
    return {"dataset": data, "pure": pure, "total": data + pure}


__all__ = ["E2E_FACTOR", "PASS_OVERHEAD_S", "PassBudget", "dataset_pass_budget", "inferences_per_artifact"]
