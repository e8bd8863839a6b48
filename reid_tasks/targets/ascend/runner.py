"""The interface every Ascend runner (ais_bench, benchmark.x86_64) implements, and what they share.

A runner knows its tool's command lines, its output layout and its perf files; it runs ONE timed pass (over
the seed ``.bin`` layout, or pure inference on the tool's own data) and returns a ``Pass``. The target decides
how many passes, on which device, after which idleness check, and turns passes into a PerfRecord.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from reid_tasks.errors import BenchmarkError

from .cann import Cann

#: bytes of one output file: 2048 float32 features
FEATURE_BYTES = 2048 * 4


@dataclass(frozen=True)
class SeedInputs:
    """The seed layout one data pass reads: one float32 CHW ``.bin`` per input and gen_dataset_info's file."""

    bin_dir: Path
    info_path: Path
    stems: list[str]


@dataclass
class Pass:
    """One timed pass of a runner."""

    throughput: float  # per chip, samples/s (ais_bench throughput / benchmark Interface throughputRate)
    latencies_ms: list[float]  # per batch
    e2e_throughput: float | None
    files: list[Path] = field(default_factory=list)  # one output per input, in input order (data passes)
    raw: dict[str, Any] = field(default_factory=dict)
    double: bool = False  # made by a test double (tests/doubles), never an Ascend result


class Runner(abc.ABC):
    """One Ascend benchmark tool."""

    name: ClassVar[str]
    #: whether the tool runs warm-up batches itself (recorded in the PerfRecord; benchmark.x86_64 has none)
    warms_up: ClassVar[bool]
    #: the most pure-inference batches one pass can take (None: no limit)
    max_pure_batches: ClassVar[int | None] = None

    def __init__(self, cann: Cann, ascend: Any, hw: tuple[int, int]) -> None:
        self.cann = cann
        self.ascend = ascend
        self.hw = hw

    @abc.abstractmethod
    def missing(self) -> list[str]:
        """What this host lacks to run the tool (empty: nothing)."""

    @abc.abstractmethod
    def version(self) -> str:
        """The tool and its version, for the perf record."""

    @abc.abstractmethod
    def data_pass(
        self, om: Path, bs: int, dev: int, inputs: SeedInputs, work: Path, index: int, warmup: int, timeout: float
    ) -> Pass:
        """One pass over ``inputs``; ``Pass.files`` holds each input's output in input order."""

    @abc.abstractmethod
    def pure_pass(
        self, om: Path, bs: int, dev: int, batches: int, data: str, work: Path, index: int, warmup: int, timeout: float
    ) -> Pass:
        """One pure-inference pass of ``batches`` batches (no input files)."""

    def pure_data(self, data: str) -> str:
        """What the pure passes feed the model, for the record."""
        return data

    def check_pure(self, batches: int) -> None:
        if self.max_pure_batches is not None and batches > self.max_pure_batches:
            raise BenchmarkError(f"{self.name} pure inference takes 1..{self.max_pure_batches} batches, got {batches}")


def info_file_text(bin_paths: Sequence[str | Path], hw: tuple[int, int] = (256, 128)) -> str:
    """gen_dataset_info.py's ``bin`` format: ``<index> <path> <width> <height>`` per line."""
    h, w = hw
    return "".join(f"{i} {p} {w} {h}\n" for i, p in enumerate(bin_paths))


def collect_outputs(out_dir: str | Path, stems: Sequence[str], suffix: str, what: str) -> list[Path]:
    """One ``<stem><suffix>`` of FEATURE_BYTES per input stem, in input order; BenchmarkError otherwise.

    The error names the missing files, the unexpected ones and those of the wrong size.
    """
    d = Path(out_dir)
    present = {p.name: p for p in d.iterdir() if p.is_file()} if d.is_dir() else {}
    expected = [f"{s}{suffix}" for s in stems]
    exp_set = set(expected)
    missing = [n for n in expected if n not in present]
    extra = sorted(n for n in present if n.endswith(".bin") and n not in exp_set)
    wrong = [
        f"{n} ({present[n].stat().st_size} bytes)"
        for n in expected
        if n in present and present[n].stat().st_size != FEATURE_BYTES
    ]
    if missing or extra or wrong:
        parts = [f"{what}: outputs in {d} do not match the {len(stems)} inputs"]
        if missing:
            parts.append(f"missing {len(missing)}: {_head(missing)}")
        if extra:
            parts.append(f"unexpected {len(extra)}: {_head(extra)}")
        if wrong:
            parts.append(f"wrong size (expected {FEATURE_BYTES} bytes = 2048 float32) {len(wrong)}: {_head(wrong)}")
        raise BenchmarkError("; ".join(parts))
    return [present[n] for n in expected]


def _head(names: Sequence[str], n: int = 10) -> str:
    shown = ", ".join(names[:n])
    return shown + (f", ... ({len(names) - n} more)" if len(names) > n else "")
