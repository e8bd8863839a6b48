"""Ascend 310 target: ATC converts the ONNX model to a fixed-batch ``.om``; ais_bench (default) or the legacy
benchmark.x86_64 runs it on one NPU device, the way the seed guide does by hand.

    target = get_target("ascend310", cfg)        # queue "ascend310"
    art = target.convert("ReID.onnx", 16, "fp16", "artifacts/")   # atc ... --output=ReID_bs16 -> ReID_bs16.om
    feats, perf = target.run(art, cache, "run/")  # seed .bin layout -> runner -> <stem>_0.bin / <stem>_1.bin
    pure = target.benchmark_pure(art)             # ais_bench --pure_data_type / benchmark -round=N

Configuration: VALIDATION.ASCEND.{INSTALL_PATH, SOC_VERSION, PRECISION_MODE, AUTO_TUNE, RUNNER, BENCHMARK_BIN,
DEVICE_IDS, CHIPS_PER_CARD, BUSY_TIMEOUT_S, BUSY_POLL_S}. The tools run in the CANN environment: the
variables ``${INSTALL_PATH}/set_env.sh`` exports when it exists, else the seed's PATH / PYTHONPATH /
LD_LIBRARY_PATH / ASCEND_OPP_PATH / ASCEND_AICPU_PATH, merged over this process's environment.

Before every timed run ``npu-smi info`` must show the device idle (AICore 0 %, no process on its chip); the
target polls every BUSY_POLL_S up to BUSY_TIMEOUT_S and then raises DeviceBusyError with npu-smi's output.
Perf: throughput = ais_bench's ``1000*B/mean(NPU compute ms)`` or benchmark's ``Interface throughputRate``;
the card figure the seed reports = that per-chip throughput (best repetition) x CHIPS_PER_CARD.

The command lines and parsers are in reid_tasks.targets.ascend_tools; test doubles of the tools live in
tests/doubles (their numbers are never Ascend results: records made with them carry ``extra["double"]``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from reid_tasks.errors import (
    BenchmarkError,
    ConversionError,
    DeviceBusyError,
    TargetUnavailable,
)
from reid_tasks.targets import ascend_tools as at
from reid_tasks.targets.base import Target
from reid_tasks.targets.records import FEATURE_DIM, Artifact, BuildOutput, PerfRecord, Scheduling
from reid_tasks.targets.timing import BatchSource, Timing, as_source, summarize, write_run_outputs
from reid_tasks.utils import atomic_write_text, tail

log = logging.getLogger("reid_tasks.targets.ascend")

RUNNERS = ("ais_bench", "benchmark")
_INFO_FILES = ("version.info", "*-linux/ascend_toolkit_install.info", "atc/version.info")
_DROP_ENV = {"_", "SHLVL", "PWD", "OLDPWD"}


# ------------------------------------------------------------------------------------------------ environment
def cann_environment(install_path: str | os.PathLike[str], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The CANN tool environment merged over ``base`` (default os.environ).

    ``${install_path}/set_env.sh`` is sourced in a bash subprocess and its environment captured (``env -0``);
    without it the seed's variables are set: PATH (python3.7.5, atc/ccec_compiler/bin, atc/bin), PYTHONPATH
    (atc/python/site-packages), LD_LIBRARY_PATH (atc/lib64, acllib/lib64) -- existing directories are
    prepended -- and ASCEND_OPP_PATH=${install_path}/opp, ASCEND_AICPU_PATH=${install_path}/.
    """
    env = dict(os.environ if base is None else base)
    ip = Path(install_path)
    set_env = ip / "set_env.sh"
    if set_env.is_file():
        script = 'source "$1" 1>&2; rc=$?; env -0; exit $rc'
        try:
            proc = subprocess.run(
                ["bash", "-c", script, "reid-set-env", str(set_env)],
                env=env,
                capture_output=True,
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise TargetUnavailable(f"cannot source {set_env}: {exc}") from exc
        if proc.returncode != 0:
            raise TargetUnavailable(
                f"sourcing {set_env} failed (exit {proc.returncode}): {tail(proc.stderr.decode('utf-8', 'replace'))}"
            )
        captured = {}
        for entry in proc.stdout.decode("utf-8", "replace").split("\0"):
            key, sep, value = entry.partition("=")
            if sep and key and key not in _DROP_ENV:
                captured[key] = value
        return {**env, **captured}

    def prepend(var: str, dirs: Sequence[Path | str]) -> None:
        existing = [str(d) for d in dirs if Path(d).is_dir()]
        old = env.get(var, "")
        if existing:
            env[var] = ":".join(existing + ([old] if old else []))

    prepend("PATH", ["/usr/local/python3.7.5/bin", ip / "atc" / "ccec_compiler" / "bin", ip / "atc" / "bin"])
    prepend("PYTHONPATH", [ip / "atc" / "python" / "site-packages"])
    prepend("LD_LIBRARY_PATH", [ip / "atc" / "lib64", ip / "acllib" / "lib64"])
    env["ASCEND_OPP_PATH"] = str(ip / "opp")
    env["ASCEND_AICPU_PATH"] = str(ip) + "/"
    return env


def cann_version(install_path: str | os.PathLike[str]) -> str | None:
    """CANN/ATC version from ``version.info`` (or the toolkit's ascend_toolkit_install.info) under the install path."""
    ip = Path(install_path)
    for pattern in _INFO_FILES:
        for p in sorted(ip.glob(pattern)):
            with contextlib.suppress(OSError):
                v = at.parse_version_info(p.read_text(encoding="utf-8", errors="replace"))
                if v:
                    return v
    return None


@dataclass
class _Proc:
    argv: list[str]
    line: str
    returncode: int
    output: str
    wall_s: float
    log_path: Path


def _run(
    argv: Sequence[str],
    *,
    line: str,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,
    log_path: Path,
    error: type[Exception],
    what: str,
) -> _Proc:
    """Run a tool (stderr merged into stdout), keep its full output in ``log_path``; raise ``error`` on a timeout."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            list(argv),
            cwd=str(cwd),
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise TargetUnavailable(f"{what}: command not found: {argv[0]} ({line})") from exc
    except subprocess.TimeoutExpired as exc:
        out = exc.output.decode("utf-8", "replace") if isinstance(exc.output, bytes) else (exc.output or "")
        atomic_write_text(log_path, f"$ {line}\n# cwd: {cwd}\n# timed out after {timeout} s\n{out}")
        raise error(f"{what} timed out after {timeout} s: {line}\nlog: {log_path}\n{tail(out)}") from exc
    wall = time.perf_counter() - t0
    atomic_write_text(log_path, f"$ {line}\n# cwd: {cwd}\n# exit: {proc.returncode}, {wall:.3f} s\n{proc.stdout}")
    return _Proc(list(argv), line, proc.returncode, proc.stdout, wall, log_path)


@dataclass
class _Rep:
    """One timed pass of a runner."""

    throughput: float  # per chip, samples/s (ais_bench throughput / benchmark Interface throughputRate)
    latencies_ms: list[float]  # per batch
    e2e_throughput: float | None
    files: list[Path] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    double: bool = False


# ------------------------------------------------------------------------------------------------ target
class AscendTarget(Target):
    """Ascend 310 through the CANN tools (atc + ais_bench | benchmark.x86_64, npu-smi)."""

    name: ClassVar[str] = "ascend310"
    queue: ClassVar[str] = "ascend310"
    all_precisions: ClassVar[tuple[str, ...]] = ("fp16", "fp32")
    ATC_TIMEOUT_S: ClassVar[float] = 3 * 3600
    ATC_AUTOTUNE_TIMEOUT_S: ClassVar[float] = 24 * 3600
    RUN_TIMEOUT_S: ClassVar[float] = 3 * 3600
    NPU_SMI_TIMEOUT_S: ClassVar[float] = 60
    config_node: ClassVar[str | None] = "ASCEND"
    config_defaults: ClassVar[dict[str, Any]] = {
        "INSTALL_PATH": "/usr/local/Ascend/ascend-toolkit/latest",
        "SOC_VERSION": "Ascend310",
        "PRECISION_MODE": "",  # empty: ATC's own default (force_fp16)
        "AUTO_TUNE": False,  # --auto_tune_mode="RL,GA"
        "RUNNER": "ais_bench",  # ais_bench | benchmark
        "BENCHMARK_BIN": "benchmark.x86_64",
        "DEVICE_IDS": [0],
        "CHIPS_PER_CARD": 4,
        "BUSY_TIMEOUT_S": 600,
        "BUSY_POLL_S": 5.0,
    }
    config_choices: ClassVar[dict[str, tuple[Any, ...]]] = {"RUNNER": ("ais_bench", "benchmark")}

    def __init__(
        self,
        cfg: Any | None = None,
        *,
        device_id: int | None = None,
        atc_timeout_s: float | None = None,
        run_timeout_s: float | None = None,
    ) -> None:
        super().__init__(cfg)
        self._device_id = device_id
        self._atc_timeout_s = atc_timeout_s
        self._run_timeout_s = run_timeout_s
        self._env_cache: tuple[Any, dict[str, str]] | None = None
        self._stage = "all"

    # ---- configuration
    @property
    def ascend(self) -> Any:
        return self.cfg.VALIDATION.ASCEND

    @property
    def device_kind(self) -> str:
        return str(self.ascend.SOC_VERSION)

    def scheduling(self) -> Scheduling:
        """Queue ``ascend310``; benchmarks take the pool of the device they run on (one slot: one at a time)."""
        return Scheduling(queue=self.queue, pool=f"{self.queue}_dev{int(self.ascend.DEVICE_IDS[0])}", pool_slots=1)

    def device_id(self, device_id: int | None = None) -> int:
        """The NPU device to use: the argument, the constructor's, else the first of VALIDATION.ASCEND.DEVICE_IDS."""
        if device_id is not None:
            return int(device_id)
        if self._device_id is not None:
            return int(self._device_id)
        ids = list(self.ascend.DEVICE_IDS)
        if not ids:
            raise BenchmarkError("VALIDATION.ASCEND.DEVICE_IDS is empty: no Ascend device to run on")
        return int(ids[0])

    def runner(self, runner: str | None = None) -> str:
        name = str(runner or self.ascend.RUNNER)
        if name not in RUNNERS:
            raise BenchmarkError(f"VALIDATION.ASCEND.RUNNER={name!r}: must be one of {RUNNERS}")
        return name

    def _hw(self) -> tuple[int, int]:
        from reid_tasks.config import image_size

        return image_size(self.cfg)

    def environment(self) -> dict[str, str]:
        """The CANN environment (cached while INSTALL_PATH and os.environ are unchanged)."""
        key = (str(self.ascend.INSTALL_PATH), tuple(sorted(os.environ.items())))
        if self._env_cache is None or self._env_cache[0] != key:
            self._env_cache = (key, cann_environment(self.ascend.INSTALL_PATH))
        return self._env_cache[1]

    def which(self, tool: str, env: Mapping[str, str] | None = None) -> str | None:
        env = self.environment() if env is None else env
        if os.sep in tool:
            return tool if os.access(tool, os.X_OK) else None
        return shutil.which(tool, path=env.get("PATH", ""))

    # ---- availability
    def _env_source(self) -> str:
        set_env = Path(self.ascend.INSTALL_PATH) / "set_env.sh"
        return f"sourced {set_env}" if set_env.is_file() else f"no {set_env}; seed variables"

    def missing(self, stage: str = "all") -> list[str]:
        """What is missing for ``stage`` ('convert': atc; 'run': npu-smi + runner + the device; 'all')."""
        try:
            env = self.environment()
        except TargetUnavailable as exc:
            return [str(exc)]
        out = []
        if stage in ("convert", "all") and not self.which("atc", env):
            out.append(f"atc not on PATH ({self._env_source()}; set VALIDATION.ASCEND.INSTALL_PATH)")
        if stage in ("run", "all"):
            if not self.which("npu-smi", env):
                out.append("npu-smi not on PATH (Ascend driver not installed?)")
            else:
                out += self._device_missing(env)
            out += self._runner_missing(env)
        return out

    def _device_missing(self, env: Mapping[str, str]) -> list[str]:
        try:
            info = at.parse_npu_smi(self._npu_smi_text(env))
        except (BenchmarkError, TargetUnavailable) as exc:
            return [str(exc)]
        dev = self.device_id()
        if info.chip(dev) is None:
            return [f"npu-smi info lists no device {dev} (devices: {sorted(c.device_id for c in info.chips)})"]
        return []

    def _runner_missing(self, env: Mapping[str, str]) -> list[str]:
        runner = self.runner()
        if runner == "benchmark":
            b = str(self.ascend.BENCHMARK_BIN)
            return [] if self.which(b, env) else [f"{b} not found (VALIDATION.ASCEND.BENCHMARK_BIN, PATH)"]
        py = self.which("python3", env)
        if not py:
            return ["python3 not on PATH (needed for python3 -m ais_bench)"]
        probe = "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('ais_bench') else 1)"
        try:
            rc = subprocess.run([py, "-c", probe], env=dict(env), capture_output=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return [f"cannot run {py}: {exc}"]
        return [] if rc.returncode == 0 else [f"ais_bench is not importable by {py} (pip install the ais_bench wheel)"]

    def available(self) -> tuple[bool, str]:
        missing = self.missing(self._stage)
        if missing:
            return False, "; ".join(missing)
        return (
            True,
            f"CANN {self.tool_versions().get('cann', 'unknown')} ({self._env_source()}), runner {self.runner()}",
        )

    @contextlib.contextmanager
    def _staged(self, stage: str) -> Iterator[None]:
        old, self._stage = self._stage, stage
        try:
            yield
        finally:
            self._stage = old

    def tool_versions(self) -> dict[str, str]:
        return {"cann": cann_version(self.ascend.INSTALL_PATH) or "unknown"}

    # ---- conversion
    def check_precision(self, precision: str) -> None:
        at.precision_mode_for(precision, str(self.ascend.PRECISION_MODE))  # specific errors (int8: AMCT, bf16)
        super().check_precision(precision)

    def supported_precisions(self) -> tuple[str, ...]:
        return self.all_precisions

    def settings(self, precision: str) -> dict[str, Any]:
        mode = at.precision_mode_for(precision, str(self.ascend.PRECISION_MODE))
        return {
            "soc_version": str(self.ascend.SOC_VERSION),
            "precision_mode": mode or f"(default {at.ATC_DEFAULT_PRECISION_MODE})",
            "auto_tune": bool(self.ascend.AUTO_TUNE),
            "input_hw": list(self._hw()),
        }

    def convert(
        self,
        onnx_path: str | os.PathLike[str],
        batch_size: int,
        precision: str,
        out_dir: str | os.PathLike[str],
        *,
        calibration: Any = None,
    ) -> Artifact:
        """``atc`` for one batch size (idempotent: an artifact built from the same inputs is reused)."""
        with self._staged("convert"):
            return super().convert(onnx_path, batch_size, precision, out_dir, calibration=calibration)

    def atc_command(self, onnx_path: str | os.PathLike[str], batch_size: int, precision: str) -> list[str]:
        """The atc argv for this configuration (``atc`` as argv[0]); ``--output`` is ``<onnx stem>_bs<B>``."""
        mode = at.precision_mode_for(precision, str(self.ascend.PRECISION_MODE))
        return at.atc_argv(
            Path(onnx_path),
            f"{Path(onnx_path).stem}_bs{batch_size}",
            batch_size,
            soc_version=str(self.ascend.SOC_VERSION),
            precision_mode=mode,
            auto_tune=bool(self.ascend.AUTO_TUNE),
            hw=self._hw(),
        )

    def _build(
        self, onnx_path: Path, batch_size: int, precision: str, out_dir: Path, *, calibration: Any = None
    ) -> BuildOutput:
        env = self.environment()
        atc = self.which("atc", env)
        if not atc:
            raise TargetUnavailable(f"atc not on PATH ({self._env_source()})")
        argv = self.atc_command(onnx_path.resolve(), batch_size, precision)
        line = at.command_line(argv)
        auto_tune = bool(self.ascend.AUTO_TUNE)
        timeout = self._atc_timeout_s or (self.ATC_AUTOTUNE_TIMEOUT_S if auto_tune else self.ATC_TIMEOUT_S)
        failed_log = out_dir.parent / f"{self.artifact_name(batch_size, precision)}.atc-failed.log"
        proc = _run(
            [atc, *argv[1:]],
            line=line,
            cwd=out_dir,
            env=env,
            timeout=timeout,
            log_path=failed_log,
            error=ConversionError,
            what="atc",
        )
        om = out_dir / f"{onnx_path.stem}_bs{batch_size}.om"
        if proc.returncode != 0 or not om.is_file():
            why = f"exit {proc.returncode}" if proc.returncode else f"exit 0 but no {om.name} was written"
            raise ConversionError(f"atc failed ({why}): {line}\nfull log: {failed_log}\n{tail(proc.output)}")
        log_text = failed_log.read_text(encoding="utf-8")
        failed_log.unlink()
        for scratch in out_dir.glob("kernel_meta*"):  # operator compile scratch, not part of the model
            shutil.rmtree(scratch, ignore_errors=True)
        mode = at.precision_mode_for(precision, str(self.ascend.PRECISION_MODE))
        h, w = self._hw()
        return BuildOutput(
            main_file=om.name,
            command=line,
            log=log_text,
            extra={
                "input_shape": [batch_size, 3, h, w],
                "soc_version": str(self.ascend.SOC_VERSION),
                "precision_mode": mode or at.ATC_DEFAULT_PRECISION_MODE,
                "precision_mode_flag": mode,
                "auto_tune": auto_tune,
                "install_path": str(self.ascend.INSTALL_PATH),
                "atc": atc,
                "double": "TEST DOUBLE" in proc.output,
            },
        )

    # ---- device guard
    def _npu_smi_text(self, env: Mapping[str, str]) -> str:
        smi = self.which("npu-smi", env)
        if not smi:
            raise TargetUnavailable("npu-smi not on PATH (Ascend driver not installed?)")
        try:
            proc = subprocess.run(
                [smi, "info"],
                env=dict(env),
                capture_output=True,
                text=True,
                errors="replace",
                timeout=self.NPU_SMI_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BenchmarkError(f"npu-smi info timed out after {self.NPU_SMI_TIMEOUT_S} s") from exc
        if proc.returncode != 0:
            raise BenchmarkError(f"npu-smi info failed (exit {proc.returncode}):\n{tail(proc.stdout + proc.stderr)}")
        return proc.stdout

    def wait_idle(
        self,
        device_id: int | None = None,
        *,
        timeout_s: float | None = None,
        poll_s: float | None = None,
    ) -> at.NpuSmiInfo:
        """Poll ``npu-smi info`` until the device is idle; DeviceBusyError with npu-smi's output after the timeout."""
        env = self.environment()
        dev = self.device_id(device_id)
        timeout_s = float(self.ascend.BUSY_TIMEOUT_S if timeout_s is None else timeout_s)
        poll_s = max(float(self.ascend.BUSY_POLL_S if poll_s is None else poll_s), 0.01)
        deadline = time.monotonic() + timeout_s
        while True:
            text = self._npu_smi_text(env)
            info = at.parse_npu_smi(text)
            idle, why = info.device_state(dev)
            if idle:
                return info
            if info.chip(dev) is None:
                raise TargetUnavailable(f"ascend310: {why}. npu-smi info said:\n{text}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeviceBusyError(
                    f"ascend310: {why}; still not idle after {timeout_s:g} s (polled every {poll_s:g} s; "
                    "VALIDATION.ASCEND.BUSY_TIMEOUT_S). The seed needs the device to itself. "
                    f"npu-smi info said:\n{text}"
                )
            log.info("ascend310: %s; waiting (%.0f s left)", why, left)
            time.sleep(min(poll_s, left))

    # ---- inputs
    def seed_layout(self, inputs: np.ndarray | BatchSource, dest: Path) -> tuple[Path, Path, list[str]]:
        """(bin dir, info file, stems in input order): the cache's own seed layout, or one written here."""
        h, w = self._hw()
        n = len(inputs)
        if not isinstance(inputs, np.ndarray) and hasattr(inputs, "seed_layout"):
            lay = inputs.seed_layout()  # written once per cache fingerprint, shared by artifacts and runs
            bin_dir, info, stems = Path(lay.bin_dir), Path(lay.info_path), list(lay.stems)
        elif not isinstance(inputs, np.ndarray) and hasattr(inputs, "write_seed_layout"):
            lay = inputs.write_seed_layout(dest)
            bin_dir, info, stems = Path(lay.bin_dir), Path(lay.info_path), list(lay.stems)
        else:
            source = as_source(inputs)
            if tuple(source.batch(0, 1).shape[1:]) != (3, h, w):
                raise BenchmarkError(f"ascend310: inputs must be [N,3,{h},{w}], got {source.batch(0, 1).shape}")
            bin_dir, info = dest / "prep_dataset", dest / "prep_bin.info"
            if bin_dir.exists():
                shutil.rmtree(bin_dir)
            bin_dir.mkdir(parents=True)
            stems = [f"{i:06d}" for i in range(n)]
            for s in range(0, n, 256):
                x = np.ascontiguousarray(source.batch(s, min(s + 256, n)), dtype=np.float32)
                for j, row in enumerate(x):
                    row.tofile(bin_dir / f"{stems[s + j]}.bin")
            atomic_write_text(info, at.info_file_text([bin_dir / f"{t}.bin" for t in stems], (h, w)))
        self._check_layout(bin_dir, stems, n, 3 * h * w * 4)
        return bin_dir, info, stems

    @staticmethod
    def _check_layout(bin_dir: Path, stems: list[str], n: int, nbytes: int) -> None:
        if len(stems) != n:
            raise BenchmarkError(f"ascend310: seed layout {bin_dir} has {len(stems)} stems for {n} inputs")
        if len(set(stems)) != len(stems):
            raise BenchmarkError(f"ascend310: duplicate stems in the seed layout {bin_dir}")
        dotted = [s for s in stems if "." in s]
        if dotted:  # ais_bench names outputs basename.split('.')[0] + '_0.bin'
            raise BenchmarkError(f"ascend310: stems with '.' cannot be mapped back from the outputs: {dotted[:5]}")
        present = {p.name: p for p in bin_dir.glob("*.bin")}
        expected = {f"{s}.bin" for s in stems}
        odd = sorted(set(present) - expected)[:5] + sorted(expected - set(present))[:5]
        if odd:
            raise BenchmarkError(f"ascend310: {bin_dir} must hold exactly the {n} input .bin files; odd: {odd}")
        wrong = [s for s in stems[:1] + stems[-1:] if present[f"{s}.bin"].stat().st_size != nbytes]
        if wrong:
            raise BenchmarkError(f"ascend310: {bin_dir}/{wrong[0]}.bin is not {nbytes} bytes (float32 CHW)")

    # ---- running
    def _om(self, artifact: Artifact) -> tuple[Path, int]:
        self.check_artifact(artifact)
        if not artifact.batch_size:
            raise BenchmarkError(f"ascend310: artifact {artifact.path} has no fixed batch size")
        return Path(artifact.path), int(artifact.batch_size)

    def _timeout(self) -> float:
        return float(self._run_timeout_s or self.RUN_TIMEOUT_S)

    def run(
        self,
        artifact: Artifact,
        inputs: np.ndarray | BatchSource,
        out_dir: str | os.PathLike[str] | None = None,
        *,
        warmup: int | None = None,
        repeats: int | None = None,
        device_id: int | None = None,
        runner: str | None = None,
    ) -> tuple[np.ndarray, PerfRecord]:
        """Features (float32 [N, 2048], input order) and perf of ``repeats`` runner passes over all inputs.

        Files go under ``out_dir`` (a temporary directory when None): ``input/`` (seed layout when the inputs
        are an array), ``ais_bench/repK/`` or ``benchmark/repK/`` per pass with the tool's log, then
        features.npy and perf.json. Features come from the first pass; every pass must produce exactly one
        8,192-byte output per input.
        """
        with self._staged("run"):
            self.require_available()
        om, bs = self._om(artifact)
        bench = self.cfg.VALIDATION.BENCH
        warmup = int(bench.WARMUP if warmup is None else warmup)
        repeats = int(bench.REPEATS if repeats is None else repeats)
        if repeats < 1:
            raise BenchmarkError(f"repeats must be >= 1, got {repeats}")
        runner = self.runner(runner)
        dev = self.device_id(device_id)
        n = len(inputs)
        if n == 0:
            raise BenchmarkError("ascend310: no inputs to run")
        with _workdir(out_dir) as work:
            bin_dir, info_path, stems = self.seed_layout(inputs, work / "input")
            reps: list[_Rep] = []
            feats: np.ndarray | None = None
            smi: at.NpuSmiInfo | None = None
            for r in range(repeats):
                smi = self.wait_idle(dev)
                if runner == "ais_bench":
                    rep = self._pass_ais(om, bs, dev, bin_dir, stems, work / "ais_bench", f"rep{r}", warmup)
                else:
                    rep = self._pass_benchmark(om, bs, dev, info_path, stems, work / "benchmark" / f"rep{r}")
                if r == 0:
                    feats = _read_features(rep.files)
                else:  # only the first pass's outputs are kept
                    for p in rep.files:
                        p.unlink()
                rep.files = []
                reps.append(rep)
            if smi is None or feats is None:  # pragma: no cover - repeats >= 1 checked above
                raise BenchmarkError("ascend310: no pass ran")
            perf = self._perf(
                artifact, reps, smi, dev, bs, n, runner, mode="real", warmup=warmup if runner == "ais_bench" else 0
            )
            if not np.isfinite(feats).all():
                raise BenchmarkError(f"ascend310: non-finite features from {artifact.path}")
            if out_dir is not None:
                write_run_outputs(work, feats, perf)
        return feats, perf

    def benchmark_pure(
        self,
        artifact: Artifact,
        *,
        batches: int | None = None,
        repeats: int | None = None,
        data: str | None = None,
        warmup: int | None = None,
        device_id: int | None = None,
        runner: str | None = None,
        out_dir: str | os.PathLike[str] | None = None,
    ) -> PerfRecord:
        """Pure inference: ais_bench without ``--input`` (``--loop`` batches of zero/random data) or
        ``benchmark.x86_64 -round=N`` (the seed's 纯推理 mode; its data is the tool's own)."""
        with self._staged("run"):
            self.require_available()
        om, bs = self._om(artifact)
        bench = self.cfg.VALIDATION.BENCH
        batches = int(bench.PURE_BATCHES if batches is None else batches)
        repeats = int(bench.REPEATS if repeats is None else repeats)
        warmup = int(bench.WARMUP if warmup is None else warmup)
        data = str(bench.PURE_DATA if data is None else data)
        if batches < 1 or repeats < 1:
            raise BenchmarkError(f"batches and repeats must be >= 1, got {batches}, {repeats}")
        if data not in ("zero", "random"):
            raise BenchmarkError(f"pure-inference data must be 'random' or 'zero', got {data!r}")
        runner = self.runner(runner)
        if runner == "benchmark" and batches > 1024:
            raise BenchmarkError(f"benchmark.x86_64 -round takes 1..1024, got {batches}")
        dev = self.device_id(device_id)
        with _workdir(out_dir) as work:
            reps = []
            smi: at.NpuSmiInfo | None = None
            for r in range(repeats):
                smi = self.wait_idle(dev)
                if runner == "ais_bench":
                    rep = self._pass_ais(om, bs, dev, None, [], work / "ais_bench", f"pure{r}", warmup, batches, data)
                else:
                    rep = self._pass_benchmark_pure(om, bs, dev, batches, work / "benchmark" / f"pure{r}")
                reps.append(rep)
            if smi is None:  # pragma: no cover - repeats >= 1 checked above
                raise BenchmarkError("ascend310: no pass ran")
            return self._perf(
                artifact,
                reps,
                smi,
                dev,
                bs,
                bs * batches,
                runner,
                mode="pure",
                warmup=warmup if runner == "ais_bench" else 0,
                extra={"data": data if runner == "ais_bench" else "benchmark.x86_64 built-in", "batches": batches},
            )

    # ---- one pass per runner
    def _python(self, env: Mapping[str, str]) -> str:
        py = self.which("python3", env)
        if not py:
            raise TargetUnavailable("python3 not on PATH (needed for python3 -m ais_bench)")
        return py

    def _pass_ais(
        self,
        om: Path,
        bs: int,
        dev: int,
        bin_dir: Path | None,
        stems: list[str],
        out_root: Path,
        dirname: str,
        warmup: int,
        loop: int | None = None,
        data: str | None = None,
    ) -> _Rep:
        env = self.environment()
        argv = at.ais_bench_argv(
            om, out_root, dirname, bs, dev, input_dir=bin_dir, loop=loop, warmup_count=warmup, pure_data_type=data
        )
        out_dir = out_root / dirname
        summary_path = at.ais_summary_path(out_root, dirname)
        shutil.rmtree(out_dir, ignore_errors=True)
        summary_path.unlink(missing_ok=True)
        out_root.mkdir(parents=True, exist_ok=True)
        line = at.command_line(argv)
        proc = _run(
            [self._python(env), *argv[1:]],
            line=line,
            cwd=out_root,
            env=env,
            timeout=self._timeout(),
            log_path=out_root / f"{dirname}.log",
            error=BenchmarkError,
            what="ais_bench",
        )
        if proc.returncode != 0:
            raise _tool_error(f"ais_bench failed (exit {proc.returncode})", proc)
        if not summary_path.is_file():
            raise _tool_error(f"ais_bench wrote no summary {summary_path}", proc)
        try:
            raw = json.loads(summary_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise BenchmarkError(f"ais_bench summary {summary_path} is not JSON: {exc}") from exc
        summary = at.parse_ais_summary(raw, str(summary_path))
        files = at.collect_outputs(out_dir, stems, "_0.bin", "ais_bench") if bin_dir is not None else []
        n = len(stems)
        return _Rep(
            throughput=summary.throughput,
            latencies_ms=summary.npu_compute_time_list,
            e2e_throughput=(n / proc.wall_s) if n else None,
            files=files,
            raw={
                "command": line,
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

    def _benchmark_bin(self, env: Mapping[str, str]) -> str:
        b = str(self.ascend.BENCHMARK_BIN)
        path = self.which(b, env)
        if not path:
            raise TargetUnavailable(f"{b} not found (VALIDATION.ASCEND.BENCHMARK_BIN, PATH)")
        return str(Path(path).resolve())

    def _run_benchmark(self, argv: list[str], run_dir: Path) -> _Proc:
        env = self.environment()
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        display = at.command_line(["./" + Path(argv[0]).name, *argv[1:]])
        proc = _run(
            argv,
            line=display,
            cwd=run_dir,
            env=env,
            timeout=self._timeout(),
            log_path=run_dir / "benchmark.log",
            error=BenchmarkError,
            what="benchmark.x86_64",
        )
        if proc.returncode != 0:
            raise _tool_error(f"benchmark.x86_64 failed (exit {proc.returncode})", proc)
        return proc

    def _pass_benchmark(self, om: Path, bs: int, dev: int, info_path: Path, stems: list[str], run_dir: Path) -> _Rep:
        argv = at.benchmark_argv(self._benchmark_bin(self.environment()), om, bs, dev, info_path, self._hw())
        proc = self._run_benchmark(argv, run_dir)
        perf_path = at.benchmark_perf_path(run_dir, bs, dev)
        if not perf_path.is_file():
            raise _tool_error(f"benchmark.x86_64 wrote no {perf_path}", proc)
        perf = at.parse_benchmark_perf(perf_path.read_text(encoding="utf-8", errors="replace"), str(perf_path))
        files = at.collect_outputs(at.benchmark_dump_dir(run_dir, dev), stems, "_1.bin", "benchmark.x86_64")
        return _Rep(
            throughput=perf.interface_throughput,
            latencies_ms=[bs * 1000.0 / perf.interface_throughput],
            e2e_throughput=perf.e2e_throughput,
            files=files,
            raw={"command": proc.line, "log": str(proc.log_path), "perf_file": str(perf_path), "stages": perf.stages},
            double=perf.double,
        )

    def _pass_benchmark_pure(self, om: Path, bs: int, dev: int, rounds: int, run_dir: Path) -> _Rep:
        argv = at.benchmark_pure_argv(self._benchmark_bin(self.environment()), om, bs, dev, rounds)
        proc = self._run_benchmark(argv, run_dir)
        perf_path = at.benchmark_pure_perf_path(run_dir, om, dev)
        if not perf_path.is_file():  # some tool builds name the file after device 0 whatever -device_id says
            found = sorted((run_dir / "result").glob(f"PureInfer_perf_of_{om.stem}_in_device_*.txt"))
            if not found:
                raise _tool_error(f"benchmark.x86_64 wrote no {perf_path}", proc)
            perf_path = found[-1]
        perf = at.parse_pure_perf(perf_path.read_text(encoding="utf-8", errors="replace"), str(perf_path))
        return _Rep(
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

    # ---- records
    def _runner_version(self, runner: str) -> str:
        if runner == "benchmark":
            return "benchmark.x86_64 (CANN " + self.tool_versions()["cann"] + ")"
        env = self.environment()
        probe = "import ais_bench; print(getattr(ais_bench, '__version__', 'unknown'))"
        try:
            proc = subprocess.run(
                [self._python(env), "-c", probe], env=dict(env), capture_output=True, text=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return "ais_bench unknown"
        v = proc.stdout.strip().splitlines()[-1] if proc.returncode == 0 and proc.stdout.strip() else "unknown"
        return f"ais_bench {v}"

    def _perf(
        self,
        artifact: Artifact,
        reps: list[_Rep],
        smi: at.NpuSmiInfo,
        dev: int,
        bs: int,
        samples: int,
        runner: str,
        *,
        mode: str,
        warmup: int,
        extra: Mapping[str, Any] | None = None,
    ) -> PerfRecord:
        chip = smi.chip(dev)
        kind = chip.kind if chip else self.device_kind
        soc = artifact.extra.get("soc_version")
        if soc and soc != kind:
            log.warning("ascend310: %s was built for %s but device %d is %s", artifact.path, soc, dev, kind)
        timing = Timing(
            latencies=[ms / 1e3 for r in reps for ms in r.latencies_ms],
            pass_infer_s=[samples / r.throughput for r in reps],
            pass_wall_s=[samples / r.e2e_throughput for r in reps if r.e2e_throughput],
        )
        double = any(r.double for r in reps) or smi.double or bool(artifact.extra.get("double"))
        tools = {
            **(artifact.tool_versions or self.tool_versions()),
            "runner": self._runner_version(runner),
            "npu-smi": smi.version or "unknown",
        }
        chips = int(self.ascend.CHIPS_PER_CARD)
        perf = summarize(
            target=self.name,
            timing=timing,
            samples=samples,
            batch_size=bs,
            warmup=warmup,
            device_kind=kind,
            device_id=dev,
            tool_versions=tools,
            mode=mode,
            precision=artifact.precision,
            e2e=mode == "real",
            extra={
                "artifact_sha256": artifact.sha256,
                "runner": runner,
                "double": double,
                "chips_per_card": chips,
                "card_throughput_basis": "best pass per-chip throughput x chips_per_card",
                "card_throughput_median": float(np.median([r.throughput for r in reps])) * chips,
                "npu": dataclasses.asdict(chip) if chip else None,
                "passes": [r.raw for r in reps],
                **(extra or {}),
            },
        )
        if double:
            log.warning("ascend310: these figures come from TEST DOUBLES (tests/doubles), not from an Ascend device")
        return dataclasses.replace(perf, card_throughput=perf.throughput_best * chips)


def _tool_error(what: str, proc: _Proc) -> BenchmarkError:
    return BenchmarkError(f"{what}: {proc.line}\nlog: {proc.log_path}\n{tail(proc.output)}")


def _read_features(files: Sequence[Path]) -> np.ndarray:
    out = np.empty((len(files), FEATURE_DIM), dtype=np.float32)
    for i, p in enumerate(files):
        out[i] = np.fromfile(p, dtype=np.float32)
    return out


@contextlib.contextmanager
def _workdir(out_dir: str | os.PathLike[str] | None) -> Iterator[Path]:
    if out_dir is not None:
        p = Path(out_dir).absolute()
        p.mkdir(parents=True, exist_ok=True)
        yield p
        return
    with tempfile.TemporaryDirectory(prefix="reid-ascend-") as tmp:
        yield Path(tmp)


__all__ = ["AscendTarget", "cann_environment", "cann_version"]
