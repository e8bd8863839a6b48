"""Ascend 310 target end to end through the TEST DOUBLES in tests/doubles (never Ascend results).

The doubles go on PATH / PYTHONPATH only inside each test (monkeypatch). They accept the real command lines,
write the real file layouts and compute the outputs with onnxruntime from the ONNX inside the double .om.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from reid_tasks.config import load_config
from reid_tasks.errors import BenchmarkError, ConversionError, DeviceBusyError, PrecisionNotSupported
from reid_tasks.targets import Artifact, get_target
from reid_tasks.targets.ascend import AscendTarget

DOUBLES = Path(__file__).resolve().parents[1] / "doubles"
DOUBLE_ENV = (
    "REID_DOUBLE_ATC_FAIL",
    "REID_DOUBLE_ATC_REFUSE_FP32",
    "REID_DOUBLE_NPU_DEVICES",
    "REID_DOUBLE_NPU_BUSY_FILE",
    "REID_DOUBLE_DROP_OUTPUT",
)


def _cfg(install: Path, *opts: str):
    base = [
        "VALIDATION.ASCEND.INSTALL_PATH", str(install),
        "VALIDATION.ASCEND.BUSY_TIMEOUT_S", "1",
        "VALIDATION.ASCEND.BUSY_POLL_S", "0.2",
        "VALIDATION.BENCH.REPEATS", "1",
        "VALIDATION.BENCH.WARMUP", "1",
    ]  # fmt: skip
    return load_config(opts=[*base, *opts])


@pytest.fixture()
def doubles(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Put the doubles (and this interpreter, as python3) first on PATH; returns an empty CANN install path."""
    for var in DOUBLE_ENV:
        monkeypatch.delenv(var, raising=False)
    py_bin = str(Path(sys.executable).parent)
    monkeypatch.setenv("PATH", os.pathsep.join([str(DOUBLES / "bin"), py_bin, os.environ.get("PATH", "")]))
    monkeypatch.setenv("PYTHONPATH", str(DOUBLES / "python"))
    install = tmp_path / "no-cann"  # no set_env.sh: the seed's variables are used
    install.mkdir()
    return install


@pytest.fixture()
def target(doubles: Path) -> AscendTarget:
    return AscendTarget(_cfg(doubles))


class SeedCache:
    """A cache with the preprocessing module's write_seed_layout; stems whose sorted order is not input order."""

    def __init__(self, data: np.ndarray, num_query: int) -> None:
        self.data = data
        # query first, then gallery (like Market-1501): ais_bench's natural sort would interleave them
        self.stems = [f"{(7 - i) if i < num_query else i:04d}_c{1 + i % 6}s1_{i:06d}_00" for i in range(len(data))]

    def __len__(self) -> int:
        return len(self.data)

    def batch(self, start: int, stop: int) -> np.ndarray:
        return self.data[start:stop].copy()

    def write_seed_layout(self, out_dir):
        from types import SimpleNamespace

        bin_dir = Path(out_dir) / "prep_dataset"
        bin_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for stem, row in zip(self.stems, self.data, strict=True):
            row.tofile(bin_dir / f"{stem}.bin")
            paths.append(bin_dir / f"{stem}.bin")
        info = Path(out_dir) / "prep_bin.info"
        info.write_text("".join(f"{i} {p} 128 256\n" for i, p in enumerate(paths)))
        return SimpleNamespace(bin_dir=bin_dir, info_path=info, stems=list(self.stems))


def test_registered_with_its_queue(doubles: Path) -> None:
    t = get_target("ascend310", _cfg(doubles))
    assert isinstance(t, AscendTarget) and t.queue == "ascend310" and t.name == "ascend310"
    assert t.supported_precisions() == ("fp16", "fp32")
    ok, reason = t.available()
    assert ok, reason


def test_unavailable_names_what_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    ok, reason = AscendTarget(_cfg(tmp_path)).available()
    assert not ok
    assert "atc not on PATH" in reason and "npu-smi not on PATH" in reason and "python3 not on PATH" in reason


def test_precisions_it_cannot_build(target: AscendTarget, tiny_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(PrecisionNotSupported, match="AMCT"):
        target.convert(tiny_onnx, 4, "int8", tmp_path)
    with pytest.raises(PrecisionNotSupported, match="bf16"):
        target.convert(tiny_onnx, 4, "bf16", tmp_path)


def test_convert_fp32_run_ais_bench_matches_onnxruntime_in_dataset_order(
    target: AscendTarget, tiny_onnx: Path, images: np.ndarray, tmp_path: Path, ort_ref
) -> None:
    art = target.convert(tiny_onnx, 4, "fp32", tmp_path / "art")
    om = Path(art.path)
    assert om.name == "tiny_bs4.om" and om.is_file() and art.batch_size == 4 and art.precision == "fp32"
    assert art.command == (
        f"atc --framework=5 --model={tiny_onnx.resolve()} --output=tiny_bs4 --input_format=NCHW "
        '--input_shape="image:4,3,256,128" --soc_version=Ascend310 --precision_mode=force_fp32 --log=error'
    )
    log = Path(art.build_log).read_text()
    assert "ATC run success" in log and art.command in log
    assert art.extra["double"] is True and art.extra["precision_mode"] == "force_fp32"
    assert Artifact.load(om.parent) == art
    again = target.convert(tiny_onnx, 4, "fp32", tmp_path / "art")  # idempotent: reused, not rebuilt
    assert again == art

    cache = SeedCache(images, num_query=9)
    feats, perf = target.run(art, cache, tmp_path / "run")
    ref = ort_ref(tiny_onnx, images)
    assert feats.shape == (21, 2048) and feats.dtype == np.float32
    np.testing.assert_allclose(feats, ref, rtol=1e-5, atol=1e-5)
    assert (tmp_path / "run" / "ais_bench" / "rep0_summary.json").is_file()
    assert np.array_equal(np.load(tmp_path / "run" / "features.npy"), feats)
    # perf from the double's summary (made-up timings: 1 + 0.25 * B ms per batch)
    assert perf.mode == "real" and perf.samples == 21 and perf.batch_size == 4 and perf.warmup == 1
    assert perf.throughput_best == pytest.approx(1000 * 4 / 2.0)
    assert perf.card_throughput == pytest.approx(4 * perf.throughput_best)
    assert perf.latency_ms_p50 == pytest.approx(2.0) and perf.latency_ms_p99 == pytest.approx(2.0)
    assert perf.device_kind == "Ascend310" and perf.device_id == 0 and perf.precision == "fp32"
    assert perf.extra["double"] is True and perf.tool_versions["npu-smi"] == "0.0.0-double"
    assert perf.tool_versions["runner"] == "ais_bench 0.0.0+test-double"
    assert perf.e2e_throughput is not None and perf.e2e_throughput > 0


def test_benchmark_runner_array_input(
    target: AscendTarget, tiny_onnx: Path, images: np.ndarray, tmp_path: Path, ort_ref
) -> None:
    art = target.convert(tiny_onnx, 8, "fp32", tmp_path / "art")
    x = images[:13]
    feats, perf = target.run(art, x, tmp_path / "run", runner="benchmark", repeats=2)
    np.testing.assert_allclose(feats, ort_ref(tiny_onnx, x), rtol=1e-5, atol=1e-5)
    run0 = tmp_path / "run" / "benchmark" / "rep0"
    assert (run0 / "result" / "perf_vision_batchsize_8_device_0.txt").is_file()
    assert len(list((run0 / "result" / "dumpOutput_device0").glob("*_1.bin"))) == 13
    assert (tmp_path / "run" / "input" / "prep_bin.info").read_text().splitlines()[0].endswith(" 128 256")
    iface = 1000 * 8 / 3.0
    assert perf.repeats == 2 and perf.warmup == 0
    assert perf.throughput_best == pytest.approx(iface, rel=1e-5)
    assert perf.card_throughput == pytest.approx(4 * iface, rel=1e-5)
    assert perf.e2e_throughput == pytest.approx(100)
    assert perf.latency_ms_mean == pytest.approx(8 * 1000 / iface, rel=1e-5)
    assert perf.extra["passes"][0]["stages"]["infer"]["Interface throughputRate"] == pytest.approx(iface, rel=1e-5)


def test_fp16_default_is_atc_default(
    target: AscendTarget, tiny_onnx: Path, images: np.ndarray, tmp_path: Path, ort_ref
) -> None:
    art = target.convert(tiny_onnx, 16, "fp16", tmp_path / "art")
    assert "--precision_mode" not in art.command and art.extra["precision_mode"] == "force_fp16"
    feats, perf = target.run(art, images, None)
    ref = ort_ref(tiny_onnx, images)
    cos = (feats * ref).sum(1) / np.linalg.norm(feats, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.999 and not np.array_equal(feats, ref)  # the double rounds fp16 builds
    assert perf.precision == "fp16"


def test_pure_inference_both_runners(target: AscendTarget, tiny_onnx: Path, tmp_path: Path) -> None:
    art = target.convert(tiny_onnx, 2, "fp32", tmp_path / "art")
    pure = target.benchmark_pure(art, batches=5, repeats=2, data="zero")
    assert pure.mode == "pure" and pure.samples == 10 and pure.e2e_throughput is None and pure.repeats == 2
    assert pure.throughput_best == pytest.approx(1000 * 2 / 1.5) and pure.extra["data"] == "zero"
    assert pure.extra["artifact_sha256"] == art.sha256 and pure.extra["runner"] == "ais_bench"
    assert pure.tool_versions["runner"] and pure.tool_versions["npu-smi"] and pure.precision == "fp32"
    # the SoC, driver and chips join the perf series identity (steps merges extra["hardware"])
    hardware = pure.extra["hardware"]
    assert hardware["ascend_soc"] == pure.device_kind and hardware["ascend_chips"] == 4
    assert hardware["ascend_driver"] and hardware["ascend_driver"] != "unknown"
    legacy = target.benchmark_pure(art, batches=20, repeats=1, runner="benchmark", out_dir=tmp_path / "pure")
    assert (
        tmp_path / "pure" / "benchmark" / "pure0" / "result" / "PureInfer_perf_of_tiny_bs2_in_device_0.txt"
    ).is_file()
    assert legacy.throughput_best == pytest.approx(1000 * 2 / 1.5, rel=1e-5)
    assert legacy.latency_ms_mean == pytest.approx(1.5, rel=1e-5) and legacy.card_throughput == pytest.approx(
        4 * legacy.throughput_best
    )


def test_failing_atc_gives_command_and_output_tail(
    target: AscendTarget, tiny_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REID_DOUBLE_ATC_FAIL", "1")
    with pytest.raises(ConversionError) as err:
        target.convert(tiny_onnx, 4, "fp16", tmp_path / "art")
    msg = str(err.value)
    assert "atc --framework=5" in msg and '--input_shape="image:4,3,256,128"' in msg
    assert "E19010: No parser is registered" in msg and "ATC run failed" in msg
    failed = tmp_path / "art" / "ascend310_bs4_fp16.atc-failed.log"
    assert failed.is_file() and "E19010" in failed.read_text() and str(failed) in msg
    assert not (tmp_path / "art" / "ascend310_bs4_fp16").exists()
    assert not [p for p in (tmp_path / "art").iterdir() if p.name.startswith(".")]  # no temp dir left


def test_atc_refusing_fp32_is_passed_on(
    target: AscendTarget, tiny_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REID_DOUBLE_ATC_REFUSE_FP32", "1")
    with pytest.raises(ConversionError, match=r"E10001: Value \[force_fp32\] for parameter \[--precision_mode\]"):
        target.convert(tiny_onnx, 1, "fp32", tmp_path)


def test_busy_device_times_out_with_npu_smi_text(
    target: AscendTarget, tiny_onnx: Path, images: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    art = target.convert(tiny_onnx, 4, "fp32", tmp_path / "art")
    busy = tmp_path / "busy"
    busy.write_text("0")
    monkeypatch.setenv("REID_DOUBLE_NPU_BUSY_FILE", str(busy))
    t0 = time.monotonic()
    with pytest.raises(DeviceBusyError) as err:
        target.run(art, images[:4], tmp_path / "run")
    assert time.monotonic() - t0 < 10
    msg = str(err.value)
    assert "AICore 37 %" in msg and "4242 benchmark.x86_64" in msg and "Process id" in msg and "| 0       310" in msg
    # another device is idle; and the device frees up while we wait
    assert target.wait_idle(1).chip(1).device_id == 1
    threading.Timer(0.4, busy.unlink).start()
    info = target.wait_idle(0, timeout_s=5, poll_s=0.1)
    assert info.device_state(0)[0]


def test_missing_output_file_is_named(
    target: AscendTarget, tiny_onnx: Path, images: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    art = target.convert(tiny_onnx, 4, "fp32", tmp_path / "art")
    monkeypatch.setenv("REID_DOUBLE_DROP_OUTPUT", "000005")
    with pytest.raises(BenchmarkError, match=r"missing 1: 000005_0\.bin"):
        target.run(art, images[:8], tmp_path / "run")
    with pytest.raises(BenchmarkError, match=r"missing 1: 000005_1\.bin"):
        target.run(art, images[:8], tmp_path / "run", runner="benchmark")


def test_set_env_sh_environment_and_version(
    tiny_onnx: Path, images: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ort_ref
) -> None:
    """Nothing on PATH but what ${INSTALL_PATH}/set_env.sh exports, as on a real CANN host."""
    for var in DOUBLE_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.delenv("PYTHONPATH", raising=False)
    install = tmp_path / "Ascend" / "ascend-toolkit" / "latest"
    install.mkdir(parents=True)
    (install / "version.info").write_text("Version=0.0.0-double\n")
    (install / "set_env.sh").write_text(
        f"export PATH={DOUBLES / 'bin'}:{Path(sys.executable).parent}:$PATH\n"
        f"export PYTHONPATH={DOUBLES / 'python'}:$PYTHONPATH\n"
        f"export ASCEND_OPP_PATH={install}/opp\n"
    )
    target = AscendTarget(_cfg(install, "VALIDATION.ASCEND.DEVICE_IDS", "[2]"))
    ok, reason = target.available()
    assert ok and "sourced" in reason and "0.0.0-double" in reason
    art = target.convert(tiny_onnx, 4, "fp32", tmp_path / "art")
    assert art.tool_versions == {"cann": "0.0.0-double"}
    feats, perf = target.run(art, images[:5])
    np.testing.assert_allclose(feats, ort_ref(tiny_onnx, images[:5]), rtol=1e-5, atol=1e-5)
    assert perf.device_id == 2 and perf.extra["npu"]["device_id"] == 2


def test_real_tensor_cache_keeps_query_then_gallery_order(
    target: AscendTarget, tiny_onnx: Path, tmp_path: Path, ort_ref
) -> None:
    """The preprocessing module's TensorCache and its seed layout (Market names, query then gallery)."""
    from reid_tasks.datasets import Market1501
    from reid_tasks.preprocess import preprocess_dataset
    from reid_tasks.synthetic import make_synthetic_market1501

    make_synthetic_market1501(tmp_path / "market", num_ids=4, num_distractors=2, num_junk=1)
    cache = preprocess_dataset(
        Market1501(tmp_path / "market"), tmp_path / "cache", target.cfg, workers=1, progress=False
    )
    art = target.convert(tiny_onnx, 4, "fp32", tmp_path / "art")
    feats, _ = target.run(art, cache, tmp_path / "run")
    x = cache.batch(0, len(cache))
    np.testing.assert_allclose(feats, ort_ref(tiny_onnx, x), rtol=1e-5, atol=1e-5)
    assert sorted(cache.stems) != list(cache.stems)  # natural sort of the files is not the dataset order
