"""OpenVINO int8 accuracy with and without NNCF's overflow fix, natively and with oneDNN capped at AVX2 (issue 9 s2).

CPUs without VNNI add u8 x s8 products pairwise in int16, which saturates. ``ONEDNN_MAX_CPU_ISA=AVX2`` makes a
VNNI CPU run the AVX2 kernels, so both cases are measured in one run on one machine. For each ISA setting (a
subprocess each: oneDNN reads the variable once) and each overflow-fix mode, the demo model is quantised on the
synthetic set's bounding_box_train and compared with the fp32 IR on query + gallery images: min / mean cosine.

    .venv/bin/python benchmarks/bench_int8_overflow.py [--images 200] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

MODES = ("FIRST_LAYER", "ENABLE")


def measure(work: Path, images: int) -> dict[str, dict[str, float]]:
    """min/mean cosine of int8 vs fp32 per overflow-fix mode, in this process's oneDNN ISA."""
    import numpy as np
    import openvino as ov
    from nncf.quantization.advanced_parameters import OverflowFix

    from reid_tasks.config import load_config
    from reid_tasks.datasets import Market1501
    from reid_tasks.demo import ensure_demo_data
    from reid_tasks.export import export_onnx
    from reid_tasks.preprocess import preprocess_image
    from reid_tasks.targets.parity import parity_stats

    demo = ensure_demo_data(work / "demo", num_ids=12)
    cfg = load_config(opts=["TEST.WEIGHT", demo.checkpoint])
    onnx = work / "ReID.onnx"
    if not onnx.is_file():
        export_onnx(cfg, onnx)
    ds = Market1501(demo.dataset_root)
    train = np.stack([preprocess_image(it.path, cfg) for it in ds.train[:64]])
    evalx = np.stack([preprocess_image(it.path, cfg) for it in ds.items[:images]])
    bs = 8
    core = ov.Core()
    model = ov.convert_model(str(onnx), input=[("image", [bs, 3, 256, 128])])

    def run(m) -> np.ndarray:
        from reid_tasks.targets.timing import pad_batch

        c = core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return np.concatenate(
            [c([pad_batch(evalx[s : s + bs], bs)])[0][: len(evalx[s : s + bs])] for s in range(0, len(evalx), bs)]
        )

    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

    fp32 = run(model)
    batches = [train[s : s + bs] for s in range(0, len(train), bs)]
    out = {}
    for mode in MODES:
        adv = AdvancedQuantizationParameters(overflow_fix=getattr(OverflowFix, mode))
        q = nncf.quantize(model, nncf.Dataset(batches), subset_size=len(batches), advanced_parameters=adv)
        min_cos, mean_cos, _ = parity_stats(run(q), fp32)
        out[mode] = {"min_cosine": min_cos, "mean_cosine": mean_cos}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = args.work or Path(tempfile.gettempdir()) / "reid-bench-int8-overflow"
    work.mkdir(parents=True, exist_ok=True)
    if args.child:
        print(json.dumps(measure(work, args.images)))
        return 0
    from reid_tasks.utils import cpu_flags

    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), "unknown")  # fmt: skip
    flags = sorted(f for f in cpu_flags() if f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"))
    print(f"CPU: {model}; flags {flags}; {args.images} query+gallery images, 64 train images calibrate")
    print(f"{'oneDNN ISA':<12} {'overflow fix':<12} {'min cos':>8} {'mean cos':>9}")
    for isa in ("native", "AVX2"):
        env = dict(os.environ)
        env.pop("ONEDNN_MAX_CPU_ISA", None)
        if isa != "native":
            env["ONEDNN_MAX_CPU_ISA"] = isa
        cmd = [sys.executable, __file__, "--child", "--images", str(args.images), "--work", str(work)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode:
            print(proc.stdout[-2000:] + proc.stderr[-3000:], file=sys.stderr)
            return 1
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        for mode in MODES:
            r = res[mode]
            print(f"{isa:<12} {mode:<12} {r['min_cosine']:8.5f} {r['mean_cosine']:9.5f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
