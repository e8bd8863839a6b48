"""benchmark.x86_64, the seed's legacy runner.

Real data (``-input_text_path`` = gen_dataset_info's file) writes ``result/dumpOutput_device{id}/<stem>_1.bin``
and ``result/perf_vision_batchsize_{B}_device_{id}.txt`` (five ``[stage] key: value`` lines); pure inference
(``-round=N``) writes ``result/PureInfer_perf_of_<om stem>_in_device_{id}.txt`` with ``ave_throughputRate =
Xsamples/s, ave_latency = Yms``. It runs no warm-up of its own and takes at most 1,024 rounds.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from reid_tasks.errors import BenchmarkError, TargetUnavailable

from .cann import ToolRun, command_line, run_tool
from .runner import Pass, Runner, SeedInputs, collect_outputs


def benchmark_argv(
    binary: str,
    om_path: str | Path,
    batch_size: int,
    device_id: int,
    info_path: str | Path,
    hw: tuple[int, int] = (256, 128),
) -> list[str]:
    """The seed's real-data benchmark.x86_64 argv (run with cwd = the run directory)."""
    h, w = hw
    return [
        binary,
        "-model_type=vision",
        f"-device_id={device_id}",
        f"-batch_size={batch_size}",
        f"-om_path={om_path}",
        f"-input_text_path={info_path}",
        f"-input_width={w}",
        f"-input_height={h}",
        "-output_binary=True",
        "-useDvpp=False",
    ]


def benchmark_pure_argv(binary: str, om_path: str | Path, batch_size: int, device_id: int, rounds: int) -> list[str]:
    """The legacy pure-inference benchmark.x86_64 argv (``-round=N``)."""
    return [binary, f"-round={rounds}", f"-om_path={om_path}", f"-device_id={device_id}", f"-batch_size={batch_size}"]


def benchmark_perf_path(run_dir: str | Path, batch_size: int, device_id: int) -> Path:
    return Path(run_dir) / "result" / f"perf_vision_batchsize_{batch_size}_device_{device_id}.txt"


def benchmark_dump_dir(run_dir: str | Path, device_id: int) -> Path:
    return Path(run_dir) / "result" / f"dumpOutput_device{device_id}"


def benchmark_pure_perf_path(run_dir: str | Path, om_path: str | Path, device_id: int) -> Path:
    return Path(run_dir) / "result" / f"PureInfer_perf_of_{Path(om_path).stem}_in_device_{device_id}.txt"


@dataclass(frozen=True)
class BenchmarkPerf:
    """result/perf_vision_batchsize_N_device_M.txt. Throughputs in samples/s, module latencies in ms."""

    e2e_throughput: float
    e2e_latency_ms: float  # total wall time of the run
    infer_throughput: float
    interface_throughput: float
    infer_module_latency_ms: float
    stages: dict[str, dict[str, float]]
    double: bool = False  # written by the test double (tests/doubles), never an Ascend result


_STAGE_RE = re.compile(r"^\s*\[([^\]]+)\]\s*(.*)$")
_KV_RE = re.compile(r"([A-Za-z][A-Za-z ]*?)\s*[:=]\s*([-+0-9.eE]+)")


def parse_benchmark_perf(text: str, source: str = "perf file") -> BenchmarkPerf:
    """Parse benchmark.x86_64's five perf lines (``[e2e] throughputRate: X, latency: Y`` ...)."""
    stages: dict[str, dict[str, float]] = {}
    double = False
    for line in text.splitlines():
        m = _STAGE_RE.match(line)
        if not m:
            continue
        stage = m.group(1).strip()
        if stage == "double":
            double = True
            continue
        stages[stage] = {k.strip(): float(v) for k, v in _KV_RE.findall(m.group(2))}
    try:
        e2e, infer = stages["e2e"], stages["infer"]
        return BenchmarkPerf(
            e2e_throughput=e2e["throughputRate"],
            e2e_latency_ms=e2e["latency"],
            infer_throughput=infer["throughputRate"],
            interface_throughput=infer["Interface throughputRate"],
            infer_module_latency_ms=infer["moduleLatency"],
            stages=stages,
            double=double,
        )
    except KeyError as exc:
        raise BenchmarkError(
            f"{source}: no {exc.args[0]!r} in benchmark perf output (expected '[e2e] throughputRate: X, latency: Y' "
            f"and '[infer] throughputRate: X, Interface throughputRate: Y, moduleLatency: Z'):\n{text[-2000:]}"
        ) from exc


@dataclass(frozen=True)
class PurePerf:
    """benchmark.x86_64 pure inference: mean throughput (samples/s) and mean latency per sample (ms)."""

    throughput: float
    latency_ms: float
    double: bool = False


_PURE_RE = re.compile(
    r"ave_throughputRate\s*[:=]\s*([0-9.eE+-]+)\s*samples/s\s*,\s*ave_latency\s*[:=]\s*([0-9.eE+-]+)\s*ms"
)


def parse_pure_perf(text: str, source: str = "perf file") -> PurePerf:
    """``ave_throughputRate = 323.826samples/s, ave_latency = 3.08851ms`` (file) or the ``:`` form (stdout)."""
    m = _PURE_RE.search(text)
    if not m:
        raise BenchmarkError(
            f"{source}: no 'ave_throughputRate = Xsamples/s, ave_latency = Yms' in benchmark output:\n{text[-2000:]}"
        )
    return PurePerf(float(m.group(1)), float(m.group(2)), double="[double]" in text)


class BenchmarkX86(Runner):
    name: ClassVar[str] = "benchmark"
    warms_up: ClassVar[bool] = False
    max_pure_batches: ClassVar[int | None] = 1024

    def _binary(self) -> str:
        b = str(self.ascend.BENCHMARK_BIN)
        path = self.cann.which(b)
        if not path:
            raise TargetUnavailable(f"{b} not found (VALIDATION.ASCEND.BENCHMARK_BIN, PATH)")
        return str(Path(path).resolve())

    def missing(self) -> list[str]:
        b = str(self.ascend.BENCHMARK_BIN)
        return [] if self.cann.which(b) else [f"{b} not found (VALIDATION.ASCEND.BENCHMARK_BIN, PATH)"]

    def version(self) -> str:
        return f"benchmark.x86_64 (CANN {self.cann.version()})"

    def pure_data(self, data: str) -> str:
        return "benchmark.x86_64 built-in"

    def _run(self, argv: list[str], run_dir: Path, timeout: float) -> ToolRun:
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        proc = run_tool(
            argv,
            line=command_line(["./" + Path(argv[0]).name, *argv[1:]]),
            cwd=run_dir,
            env=self.cann.environment(),
            timeout=timeout,
            log_path=run_dir / "benchmark.log",
            error=BenchmarkError,
            what="benchmark.x86_64",
        )
        if proc.returncode != 0:
            raise proc.error(f"benchmark.x86_64 failed (exit {proc.returncode})")
        return proc

    def data_pass(
        self, om: Path, bs: int, dev: int, inputs: SeedInputs, work: Path, index: int, warmup: int, timeout: float
    ) -> Pass:
        run_dir = work / "benchmark" / f"rep{index}"
        proc = self._run(benchmark_argv(self._binary(), om, bs, dev, inputs.info_path, self.hw), run_dir, timeout)
        perf_path = benchmark_perf_path(run_dir, bs, dev)
        if not perf_path.is_file():
            raise proc.error(f"benchmark.x86_64 wrote no {perf_path}")
        perf = parse_benchmark_perf(perf_path.read_text(encoding="utf-8", errors="replace"), str(perf_path))
        return Pass(
            throughput=perf.interface_throughput,
            latencies_ms=[bs * 1000.0 / perf.interface_throughput],
            e2e_throughput=perf.e2e_throughput,
            files=collect_outputs(benchmark_dump_dir(run_dir, dev), inputs.stems, "_1.bin", "benchmark.x86_64"),
            raw={"command": proc.line, "log": str(proc.log_path), "perf_file": str(perf_path), "stages": perf.stages},
            double=perf.double,
        )

    def pure_pass(
        self, om: Path, bs: int, dev: int, batches: int, data: str, work: Path, index: int, warmup: int, timeout: float
    ) -> Pass:
        run_dir = work / "benchmark" / f"pure{index}"
        proc = self._run(benchmark_pure_argv(self._binary(), om, bs, dev, batches), run_dir, timeout)
        perf_path = benchmark_pure_perf_path(run_dir, om, dev)
        if not perf_path.is_file():  # some tool builds name the file after device 0 whatever -device_id says
            found = sorted((run_dir / "result").glob(f"PureInfer_perf_of_{om.stem}_in_device_*.txt"))
            if not found:
                raise proc.error(f"benchmark.x86_64 wrote no {perf_path}")
            perf_path = found[-1]
        perf = parse_pure_perf(perf_path.read_text(encoding="utf-8", errors="replace"), str(perf_path))
        return Pass(
            throughput=perf.throughput,
            latencies_ms=[bs * perf.latency_ms],  # ave_latency is per sample (1000 / throughput)
            e2e_throughput=None,
            raw={
                "command": proc.line,
                "log": str(proc.log_path),
                "perf_file": str(perf_path),
                "ave_throughputRate": perf.throughput,
                "ave_latency_ms": perf.latency_ms,
            },
            double=perf.double,
        )
