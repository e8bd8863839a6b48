"""PyTorch targets: eager fp32 on the CPU (the reference every other target is compared with) and CUDA.

The "artifact" is a small JSON (model.json) naming the checkpoint (with its sha256) and the config overrides
of the export, read from the export report beside the ONNX (``<name>.export.json``): the network is rebuilt
with reid_tasks.model and the weights loaded, so features are those of reid_tasks.export.reference_features.

- ``pytorch`` (queue ``default``, cpu): fp32 eager; bf16 (CPU autocast) where the CPU has AVX512-BF16/AMX.
- ``pytorch-cuda`` (queue ``default``, cuda): fp32, fp16 (``.half()``), bf16 (``.to(torch.bfloat16)``, where
  the GPU supports it), channels-last; optional ``compile_mode`` ``"compile"`` (torch.compile) or
  ``"cudagraphs"`` (torch.compile mode="reduce-overhead", CUDA graphs; static batch). Unavailable, with the
  reason, where there is no GPU.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reid_tasks.errors import ConversionError, PrecisionNotSupported, TargetError
from reid_tasks.targets.base import Session, Target
from reid_tasks.targets.records import Artifact, BuildOutput
from reid_tasks.utils import cpu_count, cpu_flags, dist_version, sha256_file

if TYPE_CHECKING:
    import numpy as np

_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
COMPILE_MODES = ("none", "compile", "cudagraphs")


class PyTorchTarget(Target):
    """PyTorch eager on the CPU: fp32 is the reference."""

    name = "pytorch"
    queue = "default"
    all_precisions: tuple[str, ...] = ("fp32", "bf16")
    device = "cpu"

    def __init__(self, cfg: Any | None = None, *, compile_mode: str = "none") -> None:
        super().__init__(cfg)
        if compile_mode not in COMPILE_MODES:
            raise TargetError(f"compile_mode must be one of {list(COMPILE_MODES)}, got {compile_mode!r}")
        self.compile_mode = compile_mode

    @property
    def device_kind(self) -> str:
        return self.device

    def available(self) -> tuple[bool, str]:
        if importlib.util.find_spec("torch") is None:
            return False, "torch is not installed"
        return True, f"torch {dist_version('torch')} eager on cpu"

    def supported_precisions(self) -> tuple[str, ...]:
        if any(f in cpu_flags() for f in _BF16_FLAGS):
            return ("fp32", "bf16")
        return ("fp32",)

    def tool_versions(self) -> dict[str, str]:
        return {"torch": dist_version("torch") or ""}

    def settings(self, precision: str) -> dict[str, Any]:
        return {"device": self.device, "compile_mode": self.compile_mode}

    def artifact_name(self, batch_size: int, precision: str) -> str:
        suffix = "" if self.compile_mode == "none" else f"_{self.compile_mode}"
        return f"{self.name}_bs{batch_size}_{precision}{suffix}"

    # ---- "conversion": record checkpoint + config of the export
    def _build(
        self, onnx_path: Path, batch_size: int, precision: str, out_dir: Path, *, calibration: Any = None
    ) -> BuildOutput:
        from reid_tasks.export import load_report

        report = load_report(onnx_path)
        ckpt = Path(report.checkpoint)
        if not ckpt.is_file():
            raise ConversionError(f"{self.name}: checkpoint {ckpt} named by the export report of {onnx_path} is gone")
        sha = sha256_file(ckpt)
        if report.checkpoint_sha256 and sha != report.checkpoint_sha256:
            raise ConversionError(
                f"{self.name}: checkpoint {ckpt} changed since {onnx_path} was exported "
                f"(sha256 {sha[:12]} vs {report.checkpoint_sha256[:12]})"
            )
        spec = {
            "checkpoint": str(ckpt),
            "checkpoint_sha256": sha,
            "overrides": report.overrides,
            "neck_feat": report.neck_feat,
            "device": self.device,
            "precision": precision,
            "compile_mode": self.compile_mode,
            "input_shape": [batch_size, *list(report.input_shape)[1:]],
        }
        (out_dir / "model.json").write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        command = (
            f"reid_tasks.model.load_model(load_config(opts={_opts(report.overrides)!r}), {str(ckpt)!r})"
            f"{_precision_call(self.device, precision)}{_compile_call(self.compile_mode)}"
        )
        return BuildOutput(
            main_file="model.json",
            command=command,
            log=f"{command}\nfrom export report of {onnx_path}\n",
            extra={"input_shape": spec["input_shape"], "checkpoint": str(ckpt), "compile_mode": self.compile_mode},
        )

    def _open(self, artifact: Artifact) -> Session:
        return _TorchSession(self, artifact)


class PyTorchCudaTarget(PyTorchTarget):
    """PyTorch on a CUDA GPU: fp32 / fp16 / bf16, optionally torch.compile or CUDA graphs."""

    name = "pytorch-cuda"
    all_precisions = ("fp32", "fp16", "bf16")
    device = "cuda"

    def available(self) -> tuple[bool, str]:
        if importlib.util.find_spec("torch") is None:
            return False, "torch is not installed"
        import torch

        if not torch.cuda.is_available():
            build = "CPU-only build of torch" if torch.version.cuda is None else f"CUDA {torch.version.cuda} build"
            return False, f"no CUDA device visible ({build}, torch {torch.__version__})"
        return True, f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}"

    def supported_precisions(self) -> tuple[str, ...]:
        return self.all_precisions

    def check_precision(self, precision: str) -> None:
        super().check_precision(precision)
        if precision == "bf16":
            import torch

            if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
                raise PrecisionNotSupported(
                    f"target {self.name!r} cannot run 'bf16' on {torch.cuda.get_device_name(0)}; "
                    "supported: ['fp32', 'fp16']"
                )


def _opts(overrides: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    for k, v in overrides.items():
        out += [k, v]
    return out


def _precision_call(device: str, precision: str) -> str:
    if device == "cpu":
        return ".eval()" if precision == "fp32" else ".eval()  # torch.autocast('cpu', dtype=torch.bfloat16)"
    dtype = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[precision]
    return f".eval().to('cuda', dtype=torch.{dtype}, memory_format=torch.channels_last)"


_COMPILE_CALLS = {
    "none": "",
    "compile": "; torch.compile(model)",
    "cudagraphs": "; torch.compile(model, mode='reduce-overhead')",
}


def _compile_call(mode: str) -> str:
    return _COMPILE_CALLS[mode]


class _TorchSession(Session):
    def __init__(self, target: PyTorchTarget, artifact: Artifact) -> None:
        import torch

        from reid_tasks.config import load_config
        from reid_tasks.model import load_model

        spec = json.loads(Path(artifact.path).read_text(encoding="utf-8"))
        ckpt = spec["checkpoint"]
        if sha256_file(ckpt) != spec["checkpoint_sha256"]:
            raise TargetError(f"{target.name}: checkpoint {ckpt} changed since the artifact {artifact.path} was made")
        cfg = load_config(opts=_opts(spec["overrides"]))
        torch.set_num_threads(cpu_count())
        model = load_model(cfg, ckpt)
        self.torch = torch
        self.precision = artifact.precision
        self.device = spec["device"]
        self.device_kind = self.device
        self.device_id = 0
        self.dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.precision]
        if self.device == "cuda":
            model = model.to("cuda", dtype=self.dtype, memory_format=torch.channels_last)
            self.device_id = torch.cuda.current_device()
        mode = spec.get("compile_mode", "none")
        if mode == "compile":
            model = torch.compile(model)
        elif mode == "cudagraphs":
            model = torch.compile(model, mode="reduce-overhead")
        self.static_batch = int(artifact.batch_size) if mode != "none" and artifact.batch_size else None
        self.model = model
        self.info = {"torch_threads": torch.get_num_threads(), "compile_mode": mode, "device": self.device}
        if self.device == "cuda":
            self.info["gpu"] = torch.cuda.get_device_name(self.device_id)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        import numpy as np

        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        with torch.inference_mode():
            if self.device == "cuda":
                x = x.to("cuda", non_blocking=True).to(self.dtype).contiguous(memory_format=torch.channels_last)
                y = self.model(x)
            elif self.precision == "bf16":
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    y = self.model(x)
            else:
                y = self.model(x)
            return y.float().cpu().numpy()

    def close(self) -> None:
        del self.model
