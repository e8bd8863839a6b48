"""An artifact that did not finish: ``capture_failure`` writes what failed (stage, message, log tail) to the run
directory; ``record_results`` stores it as the artifact's failure row unless a retry succeeded."""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import traceback
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..utils import atomic_write_json, log, tail
from .context import safe_name

FAILURES_DIR = "failures"


FAILURE_STAGES = ("convert", "benchmark", "evaluate")


def _failure_path(ctx: Mapping[str, Any], target: str, batch_size: int, precision: str) -> Path:
    return Path(ctx["run_dir"]) / FAILURES_DIR / f"{safe_name(target)}_bs{int(batch_size)}_{safe_name(precision)}.json"


class _LogTail(logging.Handler):
    """The last lines the reid_tasks loggers wrote while one step ran."""

    def __init__(self, lines: int = 200) -> None:
        super().__init__(logging.INFO)
        self.lines: collections.deque[str] = collections.deque(maxlen=lines)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextlib.contextmanager
def capture_failure(ctx: Mapping[str, Any], stage: str, combo: Mapping[str, Any], attempt: int = 1) -> Iterator[None]:
    """Run one artifact's step (``stage``: convert | benchmark | evaluate of ``combo``'s target, batch size and
    precision). If it raises, write the failure (stage, message, log tail, attempt) atomically to
    ``<run_dir>/failures/`` and re-raise: ``record_results`` stores it as the artifact's failure row."""
    if stage not in FAILURE_STAGES:
        raise ValueError(f"stage must be one of {FAILURE_STAGES}, got {stage!r}")
    handler = _LogTail()
    log.addHandler(handler)
    try:
        yield
    except Exception as exc:
        failure = {
            "target": combo["target"],
            "batch_size": int(combo["batch_size"]),
            "precision": combo["precision"],
            "stage": stage,
            "message": f"{type(exc).__name__}: {exc}"[:4000],
            "log_tail": tail("\n".join([*handler.lines, traceback.format_exc()]), 80),
            "attempt": int(attempt),
            "recorded_at": datetime.now(UTC).isoformat(),
        }
        atomic_write_json(_failure_path(ctx, combo["target"], combo["batch_size"], combo["precision"]), failure)
        raise
    finally:
        log.removeHandler(handler)


def run_failures(ctx: Mapping[str, Any], evaluations: Sequence[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """The failure records of the run's artifacts that have no evaluated record (a retry that succeeded wins)."""
    done = {(e["target"], int(e["batch_size"]), e["precision"]) for e in evaluations if e}
    out = []
    for path in sorted((Path(ctx["run_dir"]) / FAILURES_DIR).glob("*.json")):
        f = json.loads(path.read_text(encoding="utf-8"))
        if (f["target"], int(f["batch_size"]), f["precision"]) not in done:
            out.append(f)
    return out
