"""reid_tasks.hardware: what a benchmark worker reports about itself (no instruction set assumed)."""

from __future__ import annotations

from pathlib import Path

from reid_tasks.hardware import collect_hardware, hardware_key, isa_features

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx avx2
"""


def test_cpu_model_and_kernel_relevant_isa(tmp_path: Path) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    hw = collect_hardware("onnxruntime", device="cpu", cpuinfo=str(path))
    assert hw["cpu"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert hw["isa"] == ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx"]
    assert hw["host"] and "gpu" not in hw
    assert isa_features({"avx2", "sse2"}) == ["avx2"]


def test_unreadable_cpuinfo_and_key(tmp_path: Path) -> None:
    hw = collect_hardware("openvino", cpuinfo=str(tmp_path / "missing"))
    assert hw["isa"] == [] and hw["host"]
    assert hardware_key(hw) == hardware_key(dict(reversed(list(hw.items()))))  # order-free
    assert hardware_key({**hw, "isa": ["avx2"]}) != hardware_key(hw)
    assert hardware_key({}) is None
