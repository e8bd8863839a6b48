"""AscendTarget: composes the CANN environment, ATC, npu-smi and one runner (ais_bench | benchmark.x86_64)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from reid_tasks.errors import BenchmarkError, TargetUnavailable
from reid_tasks.fleet import Fleet, FleetError, device_pool
from reid_tasks.targets.base import Target
from reid_tasks.targets.records import FEATURE_DIM, Artifact, BuildOutput, PerfRecord, RunSetting, Scheduling

from .ais_bench import AisBench
from .atc import Atc, precision_mode_for
from .benchmark_x86 import BenchmarkX86
from .cann import Cann
from .inputs import seed_inputs
from .npu_smi import NpuSmi, NpuSmiInfo
from .runner import Pass, Runner, SeedInputs
from .settings import CONFIG_DEFAULTS, TRIGGER_SETTINGS, check_trigger_settings, trigger_fields

if TYPE_CHECKING:  # numpy only where a benchmark runs: this module is imported when the DAG is parsed
    import numpy as np

    from reid_tasks.targets.timing import BatchSource

log = logging.getLogger("reid_tasks.targets.ascend")

#: VALIDATION.ASCEND.RUNNER -> runner class
RUNNERS: dict[str, type[Runner]] = {"ais_bench": AisBench, "benchmark": BenchmarkX86}


class AscendTarget(Target):
    """Ascend 310 through the CANN tools (atc + ais_bench | benchmark.x86_64, npu-smi)."""

    name: ClassVar[str] = "ascend310"
    queue: ClassVar[str] = "ascend310"
    all_precisions: ClassVar[tuple[str, ...]] = ("fp16", "fp32")
    RUN_TIMEOUT_S: ClassVar[float] = 3 * 3600
    config_node: ClassVar[str | None] = "ASCEND"
    config_defaults: ClassVar[dict[str, Any]] = CONFIG_DEFAULTS
    config_choices: ClassVar[dict[str, tuple[Any, ...]]] = {"RUNNER": tuple(RUNNERS)}
    trigger_settings: ClassVar[tuple[RunSetting, ...]] = TRIGGER_SETTINGS

    @classmethod
    def trigger_fields(cls, cfg: Any) -> dict[str, dict[str, Any]]:
        """The SoC (one of SOC_VERSIONS) and the devices (distinct, among the deployment's DEVICE_IDS)."""
        return trigger_fields(cfg)

    @classmethod
    def check_trigger_settings(cls, cfg: Any, deployment: Any) -> list[str]:
        """A known SoC; distinct device ids, at least one, all among the deployment's."""
        return check_trigger_settings(cfg, deployment)

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
        self._cann: Cann | None = None

    # ---- parts
    @property
    def ascend(self) -> Any:
        return self.cfg.VALIDATION.ASCEND

    @property
    def cann(self) -> Cann:
        if self._cann is None or str(self._cann.install_path) != str(self.ascend.INSTALL_PATH):
            self._cann = Cann(self.ascend.INSTALL_PATH)
        return self._cann

    @property
    def atc(self) -> Atc:
        return Atc(self.cann, self.ascend, self._hw(), self._atc_timeout_s)

    @property
    def npu_smi(self) -> NpuSmi:
        return NpuSmi(self.cann)

    def runner(self, runner: str | None = None) -> Runner:
        """The runner named by the argument, else VALIDATION.ASCEND.RUNNER."""
        name = str(runner or self.ascend.RUNNER)
        if name not in RUNNERS:
            raise BenchmarkError(f"VALIDATION.ASCEND.RUNNER={name!r}: must be one of {tuple(RUNNERS)}")
        return RUNNERS[name](self.cann, self.ascend, self._hw())

    @property
    def device_kind(self) -> str:
        return str(self.ascend.SOC_VERSION)

    def device_id(self, device_id: int | None = None) -> int:
        """The NPU device to use: the argument, the constructor's, else this host's first device in the fleet
        (without VALIDATION.ASCEND.HOSTS: the first of DEVICE_IDS). Benchmark tasks pass their leased device."""
        if device_id is not None:
            return int(device_id)
        ids = self._local_ids()
        if not ids:
            raise BenchmarkError("VALIDATION.ASCEND.DEVICE_IDS is empty: no Ascend device to run on")
        return ids[0]

    def _local_ids(self) -> list[int]:
        if self._device_id is not None:
            return [int(self._device_id)]
        return [d.id for d in self.fleet().local_devices()]

    def _hw(self) -> tuple[int, int]:
        from reid_tasks.config import image_size

        return image_size(self.cfg)

    def environment(self) -> dict[str, str]:
        """The CANN environment the tools run in."""
        return self.cann.environment()

    # ---- availability: what this host has, nothing else
    def missing_for(self, stage: str) -> list[str]:
        """What is missing for ``stage`` ('convert': atc; 'run': npu-smi listing this host's devices + the
        runner; 'all')."""
        try:
            self.cann.environment()
        except TargetUnavailable as exc:  # a set_env.sh that cannot be sourced
            return [str(exc)]
        out = []
        if stage in ("convert", "all"):
            out += self.atc.missing()
        if stage in ("run", "all"):
            try:
                out += self.npu_smi.missing(self._local_ids())
            except FleetError as exc:
                out.append(str(exc))
            out += self.runner().missing()
        return out

    def available(self) -> tuple[bool, str]:
        missing = self.missing_for("all")
        if missing:
            return False, "; ".join(missing)
        return True, f"CANN {self.cann.version()} ({self.cann.source()}), runner {self.runner().name}"

    def tool_versions(self) -> dict[str, str]:
        return {"cann": self.cann.version()}

    # ---- scheduling: a fleet of devices, one benchmark each
    def scheduling(self) -> Scheduling:
        """Queue ``ascend310``; benchmarks take a slot of the fleet's pool (one per device) and lease the device."""
        return Scheduling(queue=self.queue, pool=device_pool(self.queue), pool_slots=self.fleet().size)

    def fleet(self) -> Fleet:
        return Fleet.from_cfg(self.cfg)

    def device_state(self, device_id: int) -> tuple[bool, str]:
        return self.npu_smi.device_state(device_id)

    def run_options(self, *, device_id: int | None = None, timeout_s: float | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if device_id is not None:
            out["device_id"] = device_id
        if timeout_s is not None:
            out["timeout_s"] = timeout_s
        return out

    def wait_idle(
        self, device_id: int | None = None, *, timeout_s: float | None = None, poll_s: float | None = None
    ) -> NpuSmiInfo:
        """Poll ``npu-smi info`` until the device is idle; DeviceBusyError with npu-smi's output after the timeout."""
        return self.npu_smi.wait_idle(
            self.device_id(device_id),
            timeout_s=float(self.ascend.BUSY_TIMEOUT_S if timeout_s is None else timeout_s),
            poll_s=float(self.ascend.BUSY_POLL_S if poll_s is None else poll_s),
        )

    # ---- conversion
    def check_precision(self, precision: str) -> None:
        precision_mode_for(precision, str(self.ascend.PRECISION_MODE))  # specific errors (int8: AMCT, bf16)
        super().check_precision(precision)

    def settings(self, precision: str) -> dict[str, Any]:
        return self.atc.settings(precision)

    def _build(
        self, onnx_path: Path, batch_size: int, precision: str, out_dir: Path, *, calibration: Any = None
    ) -> BuildOutput:
        failed_log = out_dir.parent / f"{self.artifact_name(batch_size, precision)}.atc-failed.log"
        return self.atc.build(onnx_path, batch_size, precision, out_dir, failed_log)

    # ---- inputs
    def seed_layout(self, inputs: np.ndarray | BatchSource, dest: Path) -> SeedInputs:
        """The cache's own seed layout (shared per cache), or one written under ``dest`` for an array."""
        return seed_inputs(inputs, dest, self._hw())

    # ---- running
    def _om(self, artifact: Artifact) -> tuple[Path, int]:
        self.check_artifact(artifact)
        if not artifact.batch_size:
            raise BenchmarkError(f"ascend310: artifact {artifact.path} has no fixed batch size")
        return Path(artifact.path), int(artifact.batch_size)

    def _timeout(self, timeout_s: float | None) -> float:
        return float(timeout_s or self._run_timeout_s or self.RUN_TIMEOUT_S)

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
        timeout_s: float | None = None,
    ) -> tuple[np.ndarray, PerfRecord]:
        """Features (float32 [N, 2048], input order) and perf of ``repeats`` runner passes over all inputs.

        Files go under ``out_dir`` (a temporary directory when None): ``input/`` (seed layout when the inputs
        are an array), ``ais_bench/repK/`` or ``benchmark/repK/`` per pass with the tool's log, then
        features.npy and perf.json. Features come from the first pass; every pass must produce exactly one
        8,192-byte output per input. ``timeout_s`` bounds each tool run (default: the constructor's, 3 h).
        """
        import numpy as np

        from reid_tasks.targets.timing import run_settings, write_run_outputs

        self.require_available("run")
        om, bs = self._om(artifact)
        warmup, repeats = run_settings(self.cfg.VALIDATION.BENCH, warmup, repeats)
        tool = self.runner(runner)
        dev = self.device_id(device_id)
        if len(inputs) == 0:
            raise BenchmarkError("ascend310: no inputs to run")
        with _workdir(out_dir) as work:
            layout = self.seed_layout(inputs, work / "input")
            passes: list[Pass] = []
            feats: np.ndarray | None = None
            for r in range(repeats):
                smi = self.wait_idle(dev)
                p = tool.data_pass(om, bs, dev, layout, work, r, warmup, self._timeout(timeout_s))
                if r == 0:
                    feats = _read_features(p.files)
                else:  # only the first pass's outputs are kept
                    for f in p.files:
                        f.unlink()
                p.files = []
                passes.append(p)
            perf = self._perf(artifact, passes, smi, dev, bs, len(inputs), tool, mode="real", warmup=warmup)
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
        timeout_s: float | None = None,
    ) -> PerfRecord:
        """Pure inference: ais_bench without ``--input`` (``--loop`` batches of zero/random data) or
        ``benchmark.x86_64 -round=N`` (the seed's 纯推理 mode; its data is the tool's own)."""
        from reid_tasks.targets.timing import pure_settings

        self.require_available("run")
        om, bs = self._om(artifact)
        batches, repeats, warmup, data = pure_settings(self.cfg.VALIDATION.BENCH, batches, repeats, warmup, data)
        tool = self.runner(runner)
        tool.check_pure(batches)
        dev = self.device_id(device_id)
        with _workdir(out_dir) as work:
            passes = []
            for r in range(repeats):
                smi = self.wait_idle(dev)
                passes.append(tool.pure_pass(om, bs, dev, batches, data, work, r, warmup, self._timeout(timeout_s)))
            return self._perf(
                artifact,
                passes,
                smi,
                dev,
                bs,
                bs * batches,
                tool,
                mode="pure",
                warmup=warmup,
                extra={"data": tool.pure_data(data), "batches": batches},
            )

    # ---- records
    def _perf(
        self,
        artifact: Artifact,
        passes: list[Pass],
        smi: NpuSmiInfo,
        dev: int,
        bs: int,
        samples: int,
        tool: Runner,
        *,
        mode: str,
        warmup: int,
        extra: Mapping[str, Any] | None = None,
    ) -> PerfRecord:
        import numpy as np

        from reid_tasks.targets.timing import Timing

        chip = smi.chip(dev)
        kind = chip.kind if chip else self.device_kind
        soc = artifact.extra.get("soc_version")
        if soc and soc != kind:
            log.warning("ascend310: %s was built for %s but device %d is %s", artifact.path, soc, dev, kind)
        timing = Timing(
            latencies=[ms / 1e3 for p in passes for ms in p.latencies_ms],
            pass_infer_s=[samples / p.throughput for p in passes],
            pass_wall_s=[samples / p.e2e_throughput for p in passes if p.e2e_throughput],
        )
        double = any(p.double for p in passes) or smi.double or bool(artifact.extra.get("double"))
        tools = {
            **(artifact.tool_versions or self.tool_versions()),
            "runner": tool.version(),
            "npu-smi": smi.version or "unknown",
        }
        chips = int(self.ascend.CHIPS_PER_CARD)
        perf = self.perf_record(
            artifact,
            timing,
            samples=samples,
            batch_size=bs,
            warmup=warmup if tool.warms_up else 0,
            mode=mode,
            device_kind=kind,
            device_id=dev,
            tool_versions=tools,
            extra={
                "runner": tool.name,
                "double": double,
                "chips_per_card": chips,
                "card_throughput_basis": "best pass per-chip throughput x chips_per_card",
                "card_throughput_median": float(np.median([p.throughput for p in passes])) * chips,
                "npu": dataclasses.asdict(chip) if chip else None,
                # part of the perf series identity (merged into the row's hardware by hardware.measured_on)
                "hardware": {"ascend_soc": kind, "ascend_driver": smi.version or "unknown", "ascend_chips": chips},
                "passes": [p.raw for p in passes],
                **(extra or {}),
            },
        )
        if double:
            log.warning("ascend310: these figures come from TEST DOUBLES (tests/doubles), not from an Ascend device")
        return dataclasses.replace(perf, card_throughput=perf.throughput_best * chips)


def _read_features(files: Sequence[Path]) -> np.ndarray:
    import numpy as np

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
