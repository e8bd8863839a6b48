"""Ascend 310 target: ATC converts the ONNX model to a fixed-batch ``.om``; ais_bench (default) or the legacy
benchmark.x86_64 runs it on one NPU device, the way the seed guide does by hand.

    target = get_target("ascend310", cfg)        # queue "ascend310"
    art = target.convert("ReID.onnx", 16, "fp16", "artifacts/")   # atc ... --output=ReID_bs16 -> ReID_bs16.om
    feats, perf = target.run(art, cache, "run/")  # seed .bin layout -> runner -> <stem>_0.bin / <stem>_1.bin
    pure = target.benchmark_pure(art)             # ais_bench --pure_data_type / benchmark -round=N

One module per concern: ``cann`` (the CANN environment, running a tool), ``atc`` (conversion), ``npu_smi``
(devices and idleness), ``inputs`` (the seed .bin layout a data pass reads), ``runner`` (the runner interface)
with one class per runner -- ``ais_bench.AisBench`` and ``benchmark_x86.BenchmarkX86`` -- and
``target.AscendTarget`` composing them; ``settings`` holds its config node's defaults and the run settings a
trigger may choose (SoC, device ids). Each runner module holds its tool's command lines and the parsers of what
it writes.

Configuration: VALIDATION.ASCEND.{INSTALL_PATH, SOC_VERSION, PRECISION_MODE, AUTO_TUNE, RUNNER, BENCHMARK_BIN,
DEVICE_IDS, HOSTS, CHIPS_PER_CARD, BUSY_TIMEOUT_S, BUSY_POLL_S, LEASE_DIR, LEASE_TIMEOUT_S}. The tools run in
the CANN environment: the variables ``${INSTALL_PATH}/set_env.sh`` exports when it exists, else the seed's
PATH / PYTHONPATH / LD_LIBRARY_PATH / ASCEND_OPP_PATH / ASCEND_AICPU_PATH, merged over this process's
environment. Availability is a function of that environment only: conversion needs atc; a run needs npu-smi
listing the device and the runner.

Before every timed pass ``npu-smi info`` must show the device idle (AICore 0 %, no process on its chip); the
target polls every BUSY_POLL_S up to BUSY_TIMEOUT_S and then raises DeviceBusyError with npu-smi's output.
Which device a benchmark uses is decided by the fleet lease (reid_tasks.fleet). Perf: throughput = ais_bench's
``1000*B/mean(NPU compute ms)`` or benchmark's ``Interface throughputRate``; the card figure the seed reports =
that per-chip throughput (best repetition) x CHIPS_PER_CARD.

Test doubles of the tools live in tests/doubles (their numbers are never Ascend results: records made with
them carry ``extra["double"]``).
"""

from __future__ import annotations

from .cann import cann_environment, cann_version
from .settings import SOC_VERSIONS
from .target import RUNNERS, AscendTarget

__all__ = ["RUNNERS", "SOC_VERSIONS", "AscendTarget", "cann_environment", "cann_version"]
