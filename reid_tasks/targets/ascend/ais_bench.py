"""ais_bench (``python3 -m ais_bench``), the default runner.

Outputs ``<input stem>_<output index>.bin`` under ``OUT/NAME/`` and the summary ``OUT/NAME_summary.json``
(``output_prefix + "_summary.json"`` in ais_bench/infer/summary.py); throughput = ``1000*B/mean(NPU compute
ms)``. Pure inference: no ``--input``, ``--loop`` batches of zero or random data.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from reid_tasks.errors import BenchmarkError, TargetUnavailable

from .cann import command_line, run_tool
from .runner import Pass, Runner, SeedInputs, collect_outputs


def ais_bench_argv(
    model: str | Path,
    output: str | Path,
    output_dirname: str,
    batch_size: int,
    device_id: int,
    *,
    input_dir: str | Path | None = None,
    loop: int | None = None,
    warmup_count: int | None = None,
    pure_data_type: str | None = None,
    python: str = "python3",
) -> list[str]:
    """``python3 -m ais_bench`` argv: real data (``input_dir``) or pure inference (``pure_data_type``)."""
    argv = [python, "-m", "ais_bench", "--model", str(model)]
    if input_dir is not None:
        argv += ["--input", str(input_dir)]
    argv += [
        "--output",
        str(output),
        "--output_dirname",
        output_dirname,
        "--outfmt",
        "BIN",
        "--batchsize",
        str(batch_size),
        "--device",
        str(device_id),
    ]
    if loop is not None:
        argv += ["--loop", str(loop)]
    if warmup_count is not None:
        argv += ["--warmup_count", str(warmup_count)]
    if input_dir is None:
        argv += ["--pure_data_type", pure_data_type or "zero"]
    return argv


_STAT_KEYS = ("min", "max", "mean", "median", "percentile(99%)", "count")


@dataclass(frozen=True)
class AisSummary:
    """ais_bench's ``<dirname>_summary.json``. Times in ms per batch, throughput in samples/s."""

    throughput: float
    npu_compute_time: dict[str, float]
    h2d_latency: dict[str, float]
    d2h_latency: dict[str, float]
    npu_compute_time_list: list[float]
    double: bool = False


def parse_ais_summary(data: Mapping[str, Any], source: str = "summary") -> AisSummary:
    """Validate and read an ais_bench summary dict."""
    try:
        stats = {}
        for key in ("NPU_compute_time", "H2D_latency", "D2H_latency"):
            block = data[key]
            stats[key] = {k: float(block[k]) for k in _STAT_KEYS}
        times = [float(t) for t in data["npu_compute_time_list"]]
        throughput = float(data["throughput"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BenchmarkError(
            f"{source}: not an ais_bench summary (need NPU_compute_time/H2D_latency/D2H_latency with "
            f"{list(_STAT_KEYS)}, throughput, npu_compute_time_list): {exc!r}"
        ) from exc
    if not times or throughput <= 0:
        raise BenchmarkError(f"{source}: ais_bench recorded no inference (throughput {throughput}, {len(times)} times)")
    return AisSummary(
        throughput=throughput,
        npu_compute_time=stats["NPU_compute_time"],
        h2d_latency=stats["H2D_latency"],
        d2h_latency=stats["D2H_latency"],
        npu_compute_time_list=times,
        double=bool(data.get("double", False)),
    )


def ais_summary_path(output: str | Path, output_dirname: str) -> Path:
    """Where ais_bench writes the summary: ``os.path.join(output, dirname) + "_summary.json"``."""
    return Path(output) / f"{output_dirname}_summary.json"


class AisBench(Runner):
    name: ClassVar[str] = "ais_bench"
    warms_up: ClassVar[bool] = True

    def _python(self) -> str:
        py = self.cann.which("python3")
        if not py:
            raise TargetUnavailable("python3 not on PATH (needed for python3 -m ais_bench)")
        return py

    def missing(self) -> list[str]:
        py = self.cann.which("python3")
        if not py:
            return ["python3 not on PATH (needed for python3 -m ais_bench)"]
        probe = "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('ais_bench') else 1)"
        try:
            rc = subprocess.run([py, "-c", probe], env=self.cann.environment(), capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return [f"cannot run {py}: {exc}"]
        return [] if rc.returncode == 0 else [f"ais_bench is not importable by {py} (pip install the ais_bench wheel)"]

    def version(self) -> str:
        probe = "import ais_bench; print(getattr(ais_bench, '__version__', 'unknown'))"
        try:
            proc = subprocess.run(
                [self._python(), "-c", probe],
                env=self.cann.environment(),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired, TargetUnavailable):
            return "ais_bench unknown"
        v = proc.stdout.strip().splitlines()[-1] if proc.returncode == 0 and proc.stdout.strip() else "unknown"
        return f"ais_bench {v}"

    def data_pass(
        self, om: Path, bs: int, dev: int, inputs: SeedInputs, work: Path, index: int, warmup: int, timeout: float
    ) -> Pass:
        return self._pass(om, bs, dev, work / "ais_bench", f"rep{index}", warmup, timeout, inputs=inputs)

    def pure_pass(
        self, om: Path, bs: int, dev: int, batches: int, data: str, work: Path, index: int, warmup: int, timeout: float
    ) -> Pass:
        return self._pass(om, bs, dev, work / "ais_bench", f"pure{index}", warmup, timeout, loop=batches, data=data)

    def _pass(
        self,
        om: Path,
        bs: int,
        dev: int,
        out_root: Path,
        dirname: str,
        warmup: int,
        timeout: float,
        *,
        inputs: SeedInputs | None = None,
        loop: int | None = None,
        data: str | None = None,
    ) -> Pass:
        argv = ais_bench_argv(
            om,
            out_root,
            dirname,
            bs,
            dev,
            input_dir=inputs.bin_dir if inputs else None,
            loop=loop,
            warmup_count=warmup,
            pure_data_type=data,
        )
        out_dir = out_root / dirname
        summary_path = ais_summary_path(out_root, dirname)
        shutil.rmtree(out_dir, ignore_errors=True)
        summary_path.unlink(missing_ok=True)
        out_root.mkdir(parents=True, exist_ok=True)
        proc = run_tool(
            [self._python(), *argv[1:]],
            line=command_line(argv),
            cwd=out_root,
            env=self.cann.environment(),
            timeout=timeout,
            log_path=out_root / f"{dirname}.log",
            error=BenchmarkError,
            what="ais_bench",
        )
        if proc.returncode != 0:
            raise proc.error(f"ais_bench failed (exit {proc.returncode})")
        if not summary_path.is_file():
            raise proc.error(f"ais_bench wrote no summary {summary_path}")
        try:
            raw = json.loads(summary_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise BenchmarkError(f"ais_bench summary {summary_path} is not JSON: {exc}") from exc
        summary = parse_ais_summary(raw, str(summary_path))
        stems = inputs.stems if inputs else []
        return Pass(
            throughput=summary.throughput,
            latencies_ms=summary.npu_compute_time_list,
            e2e_throughput=(len(stems) / proc.wall_s) if stems else None,
            files=collect_outputs(out_dir, stems, "_0.bin", "ais_bench") if inputs else [],
            raw={
                "command": proc.line,
                "log": str(proc.log_path),
                "summary": str(summary_path),
                "throughput": summary.throughput,
                "NPU_compute_time": summary.npu_compute_time,
                "H2D_latency": summary.h2d_latency,
                "D2H_latency": summary.d2h_latency,
                "wall_s": round(proc.wall_s, 3),
            },
            double=summary.double,
        )
