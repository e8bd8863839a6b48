"""ATC: ONNX -> a fixed-batch ``.om``, the way the seed runs it.

``atc --framework=5 --model=X.onnx --output=NAME_bsB --input_format=NCHW --input_shape="image:B,3,256,128"
--soc_version=Ascend310 [--precision_mode=M] [--auto_tune_mode="RL,GA"] --log=error`` writes ``NAME_bsB.om``
in its working directory. Conversion is CPU work: it needs the toolkit, never a device.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from reid_tasks.errors import ConversionError, PrecisionNotSupported, TargetUnavailable
from reid_tasks.targets.records import BuildOutput
from reid_tasks.utils import tail

from .cann import Cann, command_line, run_tool

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


class Atc:
    """The ATC converter of one configuration (SoC, precision mode override, auto-tune, input size)."""

    TIMEOUT_S = 3 * 3600.0
    AUTOTUNE_TIMEOUT_S = 24 * 3600.0

    def __init__(self, cann: Cann, ascend: Any, hw: tuple[int, int], timeout_s: float | None = None) -> None:
        self.cann = cann
        self.soc_version = str(ascend.SOC_VERSION)
        self.mode_override = str(ascend.PRECISION_MODE)
        self.auto_tune = bool(ascend.AUTO_TUNE)
        self.hw = hw
        self.timeout_s = timeout_s or (self.AUTOTUNE_TIMEOUT_S if self.auto_tune else self.TIMEOUT_S)

    def missing(self) -> list[str]:
        if self.cann.which("atc"):
            return []
        return [f"atc not on PATH ({self.cann.source()}; set VALIDATION.ASCEND.INSTALL_PATH)"]

    def mode(self, precision: str) -> str | None:
        return precision_mode_for(precision, self.mode_override)

    def settings(self, precision: str) -> dict[str, Any]:
        """What changes the built model (part of the artifact's idempotency key)."""
        return {
            "soc_version": self.soc_version,
            "precision_mode": self.mode(precision) or f"(default {ATC_DEFAULT_PRECISION_MODE})",
            "auto_tune": self.auto_tune,
            "input_hw": list(self.hw),
        }

    def command(self, onnx_path: str | Path, batch_size: int, precision: str) -> list[str]:
        """The atc argv (``atc`` as argv[0]); ``--output`` is ``<onnx stem>_bs<B>``."""
        return atc_argv(
            Path(onnx_path),
            f"{Path(onnx_path).stem}_bs{batch_size}",
            batch_size,
            soc_version=self.soc_version,
            precision_mode=self.mode(precision),
            auto_tune=self.auto_tune,
            hw=self.hw,
        )

    def build(self, onnx_path: Path, batch_size: int, precision: str, out_dir: Path, failed_log: Path) -> BuildOutput:
        """Run atc in ``out_dir``; ConversionError with the command, the full log's path and its tail."""
        atc = self.cann.which("atc")
        if not atc:
            raise TargetUnavailable(f"atc not on PATH ({self.cann.source()})")
        argv = self.command(onnx_path.resolve(), batch_size, precision)
        line = command_line(argv)
        proc = run_tool(
            [atc, *argv[1:]],
            line=line,
            cwd=out_dir,
            env=self.cann.environment(),
            timeout=self.timeout_s,
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
        mode = self.mode(precision)
        h, w = self.hw
        return BuildOutput(
            main_file=om.name,
            command=line,
            log=log_text,
            extra={
                "input_shape": [batch_size, 3, h, w],
                "soc_version": self.soc_version,
                "precision_mode": mode or ATC_DEFAULT_PRECISION_MODE,
                "precision_mode_flag": mode,
                "auto_tune": self.auto_tune,
                "install_path": str(self.cann.install_path),
                "atc": atc,
                "double": "TEST DOUBLE" in proc.output,
            },
        )
