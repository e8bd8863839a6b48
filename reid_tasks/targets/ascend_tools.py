"""Pure helpers for the Ascend 310 target: command lines of the CANN tools and parsers of what they write.

Nothing here runs a process or touches a device; reid_tasks.targets.ascend drives the tools with these.
The formats follow the seed guide (ReID ModelZoo, CANN 5.0.1) and the tools' public sources:

- ``atc``: ``atc --framework=5 --model=X.onnx --output=NAME_bsB --input_format=NCHW
  --input_shape="image:B,3,256,128" --soc_version=Ascend310 [--precision_mode=M] [--auto_tune_mode="RL,GA"]
  --log=error``; writes ``NAME_bsB.om`` in its working directory.
- ``python3 -m ais_bench``: outputs ``<input stem>_<output index>.bin`` under ``OUT/NAME/`` and the summary
  ``OUT/NAME_summary.json`` (``output_prefix + "_summary.json"`` in ais_bench/infer/summary.py).
- ``benchmark.x86_64`` (legacy): outputs ``result/dumpOutput_device{id}/<stem>_1.bin``, perf in
  ``result/perf_vision_batchsize_{B}_device_{id}.txt`` (five ``[stage] key: value`` lines); pure inference
  (``-round=N``) writes ``result/PureInfer_perf_of_<om stem>_in_device_{id}.txt`` with
  ``ave_throughputRate = Xsamples/s, ave_latency = Yms``.
- ``npu-smi info``: a box table, two rows per chip (``NPU Name | Health | Power Temp`` then
  ``Chip Device | Bus-Id | AICore(%) Memory-Usage``), and on newer drivers a process table with
  ``No running processes found in NPU <npu>`` lines.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reid_tasks.errors import BenchmarkError, PrecisionNotSupported

#: precision vocabulary -> ATC --precision_mode (int8 needs AMCT, bf16 does not exist on Ascend 310)
ATC_PRECISION_MODE = {"fp16": "force_fp16", "fp32": "force_fp32"}
#: what ATC builds when --precision_mode is not given (inference default)
ATC_DEFAULT_PRECISION_MODE = "force_fp16"
#: every --precision_mode value ATC documents (CANN 5.x and later)
ATC_PRECISION_MODES = (
    "force_fp16",
    "allow_fp32_to_fp16",
    "must_keep_origin_dtype",
    "allow_mix_precision",
    "force_fp32",
    "force_lowerprecision",
    "allow_mix_precision_fp16",
)
AUTO_TUNE_MODE = "RL,GA"
#: bytes of one output file: 2048 float32 features
FEATURE_BYTES = 2048 * 4
#: these values are shown quoted in the recorded command line, as the seed writes them
_QUOTED_FLAGS = ("--input_shape", "--auto_tune_mode")


# ------------------------------------------------------------------------------------------------ precision
def precision_mode_for(precision: str, override: str = "") -> str | None:
    """ATC ``--precision_mode`` for a vocabulary precision; None means ATC's default (force_fp16).

    ``override`` (VALIDATION.ASCEND.PRECISION_MODE) replaces the mode of fp16 builds (e.g.
    ``allow_mix_precision``); fp32 always builds with ``force_fp32`` (ATC's own error is passed on where
    the SoC refuses it).
    """
    if precision == "int8":
        raise PrecisionNotSupported(
            "ascend310: int8 needs AMCT post-training quantisation (amct_onnx calibrate -> deploy ONNX) "
            "before ATC; that step is not part of this target. Supported: fp16 (ATC default), fp32"
        )
    if precision == "bf16":
        raise PrecisionNotSupported("ascend310: Ascend 310 has no bf16 arithmetic; supported: fp16, fp32")
    if precision not in ATC_PRECISION_MODE:
        raise PrecisionNotSupported(f"ascend310: unknown precision {precision!r}; supported: fp16, fp32")
    if override and override not in ATC_PRECISION_MODES:
        raise PrecisionNotSupported(
            f"VALIDATION.ASCEND.PRECISION_MODE={override!r} is not an ATC precision mode; one of {ATC_PRECISION_MODES}"
        )
    if precision == "fp32":
        return "force_fp32"
    return override or None


# ------------------------------------------------------------------------------------------------ commands
def atc_argv(
    onnx_path: str | Path,
    output: str,
    batch_size: int,
    *,
    soc_version: str = "Ascend310",
    precision_mode: str | None = None,
    auto_tune: bool = False,
    input_name: str = "image",
    hw: tuple[int, int] = (256, 128),
    log: str = "error",
    atc: str = "atc",
) -> list[str]:
    """The atc argv (for subprocess; no shell quoting inside the values)."""
    h, w = hw
    argv = [
        atc,
        "--framework=5",
        f"--model={onnx_path}",
        f"--output={output}",
        "--input_format=NCHW",
        f"--input_shape={input_name}:{batch_size},3,{h},{w}",
        f"--soc_version={soc_version}",
    ]
    if precision_mode:
        argv.append(f"--precision_mode={precision_mode}")
    if auto_tune:
        argv.append(f"--auto_tune_mode={AUTO_TUNE_MODE}")
    argv.append(f"--log={log}")
    return argv


def command_line(argv: Sequence[str]) -> str:
    """A shell command line for ``argv``, written the way the seed writes atc's (``--input_shape="..."``)."""
    parts = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key in _QUOTED_FLAGS and '"' not in value and "$" not in value and "\\" not in value:
            parts.append(f'{key}="{value}"')
        else:
            parts.append(shlex.quote(arg))
    return " ".join(parts)


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


def info_file_text(bin_paths: Sequence[str | Path], hw: tuple[int, int] = (256, 128)) -> str:
    """gen_dataset_info.py's ``bin`` format: ``<index> <path> <width> <height>`` per line."""
    h, w = hw
    return "".join(f"{i} {p} {w} {h}\n" for i, p in enumerate(bin_paths))


# ------------------------------------------------------------------------------------------------ versions
_VERSION_RE = re.compile(r"^\s*version\s*=\s*\[?([^\]\s]+)", re.IGNORECASE | re.MULTILINE)


def parse_version_info(text: str) -> str | None:
    """``Version=5.0.1`` (version.info) or ``version=5.0.1`` (ascend_toolkit_install.info) -> ``5.0.1``."""
    m = _VERSION_RE.search(text)
    return m.group(1) if m else None


# ------------------------------------------------------------------------------------------------ perf files
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


# ------------------------------------------------------------------------------------------------ outputs
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


# ------------------------------------------------------------------------------------------------ npu-smi
@dataclass(frozen=True)
class NpuChip:
    npu_id: int
    name: str  # as npu-smi prints it: "310", "310P3", "910B3"
    health: str
    chip_id: int
    device_id: int  # logical device id (what -device_id / --device take)
    bus_id: str
    aicore_percent: float
    memory_used_mb: int | None
    memory_total_mb: int | None

    @property
    def kind(self) -> str:
        """``Ascend310`` style name (the SoC naming ATC and the reference figures use)."""
        return self.name if self.name.lower().startswith("ascend") else f"Ascend{self.name}"


@dataclass(frozen=True)
class NpuProcess:
    npu_id: int
    chip_id: int
    pid: int
    name: str
    memory_mb: float | None


@dataclass(frozen=True)
class NpuSmiInfo:
    version: str | None
    chips: list[NpuChip]
    processes: list[NpuProcess] = field(default_factory=list)
    idle_npus: set[int] = field(default_factory=set)  # "No running processes found in NPU <id>"
    has_process_table: bool = False
    double: bool = False

    def chip(self, device_id: int) -> NpuChip | None:
        return next((c for c in self.chips if c.device_id == device_id), None)

    def device_state(self, device_id: int) -> tuple[bool, str]:
        """(idle, why): idle = listed, AICore 0 % and no process on its chip."""
        chip = self.chip(device_id)
        if chip is None:
            listed = sorted(c.device_id for c in self.chips)
            return False, f"device {device_id} is not listed by npu-smi (devices: {listed})"
        procs = [p for p in self.processes if p.npu_id == chip.npu_id and p.chip_id == chip.chip_id]
        reasons = []
        if chip.aicore_percent != 0:
            reasons.append(f"AICore {chip.aicore_percent:g} %")
        if procs:
            reasons.append("processes " + ", ".join(f"{p.pid} {p.name}".strip() for p in procs))
        if reasons:
            return False, f"device {device_id} (NPU {chip.npu_id} chip {chip.chip_id}) busy: " + "; ".join(reasons)
        return True, f"device {device_id} (NPU {chip.npu_id} chip {chip.chip_id}, {chip.kind}) idle"


_HEADER_VERSION_RE = re.compile(r"npu-smi\s+(\S+)\s+Version:\s*(\S+)")
_NO_PROC_RE = re.compile(r"No running processes found in NPU\s+(\d+)")
_MEM_RE = re.compile(r"(\d+)\s*/\s*(\d+)")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def parse_npu_smi(text: str) -> NpuSmiInfo:
    """Parse ``npu-smi info`` (Ascend 310 two-row chip layout; 310P/910 layouts without a Device column too)."""
    m = _HEADER_VERSION_RE.search(text)
    version = m.group(2) if m else None
    chips: list[NpuChip] = []
    processes: list[NpuProcess] = []
    idle: set[int] = set()
    section = "head"
    pending: list[str] | None = None
    has_proc = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith("|"):
            continue
        if "Process id" in line:
            section, has_proc, pending = "proc", True, None
            continue
        if "Name" in line and "Health" in line:
            section = "chips"
            continue
        if "Bus-Id" in line and "AICore" in line:
            continue
        if section == "proc":
            nm = _NO_PROC_RE.search(line)
            if nm:
                idle.add(int(nm.group(1)))
                continue
            cells = _cells(line)
            first = cells[0].split()
            if len(first) == 2 and all(t.isdigit() for t in first) and len(cells) >= 2 and cells[1].isdigit():
                mem = cells[3] if len(cells) > 3 else ""
                processes.append(
                    NpuProcess(
                        npu_id=int(first[0]),
                        chip_id=int(first[1]),
                        pid=int(cells[1]),
                        name=cells[2] if len(cells) > 2 else "",
                        memory_mb=float(mem) if _is_number(mem) else None,
                    )
                )
            continue
        if section != "chips":
            continue
        cells = _cells(line)
        if len(cells) < 3:
            continue
        if pending is None:
            first = cells[0].split()
            if len(first) >= 2 and first[0].isdigit():
                pending = cells
            continue
        chips.append(_chip(pending, cells, raw))
        pending = None
    return NpuSmiInfo(
        version=version,
        chips=chips,
        processes=processes,
        idle_npus=idle,
        has_process_table=has_proc,
        double="TEST DOUBLE" in text,
    )


def _chip(row1: list[str], row2: list[str], raw: str) -> NpuChip:
    npu_s, name = row1[0].split()[:2]
    ids = row2[0].split()
    third = row2[2].split()
    if not ids or not ids[0].isdigit() or not third or not _is_number(third[0]):
        raise BenchmarkError(f"npu-smi: cannot parse chip row {raw.strip()!r}")
    chip_id = int(ids[0])
    device_id = int(ids[1]) if len(ids) > 1 and ids[1].isdigit() else int(npu_s)
    mems = _MEM_RE.findall(row2[2])
    used, total = (int(mems[-1][0]), int(mems[-1][1])) if mems else (None, None)
    return NpuChip(
        npu_id=int(npu_s),
        name=name,
        health=row1[1].split()[0] if row1[1] else "",
        chip_id=chip_id,
        device_id=device_id,
        bus_id=row2[1],
        aicore_percent=float(third[0]),
        memory_used_mb=used,
        memory_total_mb=total,
    )


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True
