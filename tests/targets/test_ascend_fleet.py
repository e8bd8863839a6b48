"""The Ascend fleet (reid_tasks.fleet): declaration, device leases, fan-out over 2 simulated hosts.

The hosts are simulated by worker processes with distinct $REID_FLEET_HOST values and the npu-smi TEST DOUBLE
(tests/doubles); "benchmarks" sleep a simulated per-batch latency. Nothing here is an Ascend figure.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import logging
import multiprocessing as mp
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from reid_tasks.config import load_config
from reid_tasks.errors import DeviceBusyError
from reid_tasks.fleet import (
    Device,
    Fleet,
    FleetError,
    LeaseError,
    acquire_device,
    lease_intervals,
    lease_path,
    read_lease_log,
)

DOUBLES = Path(__file__).resolve().parents[1] / "doubles"


def _sim():
    """tests/doubles/fleet_sim.py (not a package: loaded by path once)."""
    if "fleet_sim" not in sys.modules:
        spec = importlib.util.spec_from_file_location("fleet_sim", DOUBLES / "fleet_sim.py")
        sys.modules["fleet_sim"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["fleet_sim"])
    return sys.modules["fleet_sim"]


# ------------------------------------------------------------------------------------------------ declaration
def test_fleet_from_config_two_hosts_same_ids_are_four_devices() -> None:
    cfg = load_config(
        opts=["VALIDATION.ASCEND.HOSTS", "['npu-a: 0,1', 'npu-b: 0, 1']", "VALIDATION.ASCEND.DEVICE_IDS", "[0, 1]"]
    )
    fleet = Fleet.from_cfg(cfg)
    assert fleet.size == 4
    assert fleet.devices == [Device("npu-a", 0), Device("npu-a", 1), Device("npu-b", 0), Device("npu-b", 1)]
    assert fleet.local_devices("npu-b") == [Device("npu-b", 0), Device("npu-b", 1)]


def test_default_fleet_is_each_worker_with_device_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REID_FLEET_HOST", "box7")
    fleet = Fleet.from_cfg(load_config(opts=["VALIDATION.ASCEND.DEVICE_IDS", "[2, 3]"]))
    assert fleet.size == 2 and fleet.local_devices() == [Device("box7", 2), Device("box7", 3)]


def test_device_no_host_declares_is_named() -> None:
    with pytest.raises(FleetError, match=r"device 7 .* not declared by any host .*npu-a: 0,1; npu-b: 0"):
        Fleet.parse(["npu-a: 0,1", "npu-b: 0"], [0, 7])


def test_undeclared_worker_host_and_bad_entries_are_named() -> None:
    fleet = Fleet.parse(["npu-a: 0,1"], [0, 1])
    with pytest.raises(FleetError, match=r"host 'npu-z' .* not declared .*npu-a: 0,1"):
        fleet.local_devices("npu-z")
    with pytest.raises(FleetError, match=r"entry 'npu-a 0,1'"):
        Fleet.parse(["npu-a 0,1"], [0])
    with pytest.raises(FleetError, match="twice"):
        Fleet.parse(["a: 0", "a: 1"], [0])


# ------------------------------------------------------------------------------------------------ leases
def test_lease_is_exclusive_and_logged(tmp_path: Path) -> None:
    devs = [Device("h", 0), Device("h", 1)]
    a = acquire_device(devs, tmp_path, label="a")
    b = acquire_device(devs, tmp_path, label="b")
    assert {a.device, b.device} == set(devs)
    with pytest.raises(DeviceBusyError) as err:
        acquire_device(devs, tmp_path, label="c", timeout_s=0.2, poll_s=0.05)
    msg = str(err.value)
    assert "h:0 leased by pid" in msg and "(a)" in msg and str(lease_path(tmp_path, devs[0])) in msg
    a.release()
    c = acquire_device(devs, tmp_path, label="c")
    assert c.device == a.device
    b.release()
    c.release()
    events = [(e["event"], e["label"]) for e in read_lease_log(tmp_path)]
    assert events == [
        ("acquire", "a"),
        ("acquire", "b"),
        ("release", "a"),
        ("acquire", "c"),
        ("release", "b"),
        ("release", "c"),
    ]


def test_busy_device_by_npu_smi_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A device the lease finds free but npu-smi shows in use (a process outside the fleet) is not taken."""
    for k, v in _sim().doubles_env([0, 1]).items():
        monkeypatch.setenv(k, v)
    busy = tmp_path / "busy"
    busy.write_text("0")
    monkeypatch.setenv("REID_DOUBLE_NPU_BUSY_FILE", str(busy))
    probe = _sim().npu_smi_probe
    with acquire_device([Device("h", 0), Device("h", 1)], tmp_path / "l", probe=probe) as lease:
        assert lease.device == Device("h", 1)
    with pytest.raises(DeviceBusyError, match=r"h:0: device 0 \(NPU 0 chip 0\) busy: AICore 37 %"):
        acquire_device([Device("h", 0)], tmp_path / "l", probe=probe, timeout_s=0.3, poll_s=0.1)


def _hold(root: str, ready: mp.Event) -> None:
    acquire_device([Device("h", 0)], root, label="victim")
    ready.set()
    time.sleep(60)


def test_killed_holder_releases_its_lease(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A worker killed mid-benchmark (SIGKILL: no cleanup runs) leaves its lease file; the kernel drops the
    lock, so the next task gets the device at once, well within the lease timeout, and says whose file it was."""
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    victim = ctx.Process(target=_hold, args=(str(tmp_path), ready))
    victim.start()
    assert ready.wait(20)
    with pytest.raises(DeviceBusyError):
        acquire_device([Device("h", 0)], tmp_path, label="while-alive", timeout_s=0.2, poll_s=0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(10)
    path = lease_path(tmp_path, Device("h", 0))
    assert json.loads(path.read_text())["pid"] == victim.pid  # the file is still there, naming the dead holder
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="reid_tasks.fleet"):
        lease = acquire_device([Device("h", 0)], tmp_path, label="next", timeout_s=30, poll_s=0.05)
    assert time.monotonic() - t0 < 5
    assert lease.previous["pid"] == victim.pid
    assert f"lease file {path} was left by pid {victim.pid} (victim)" in caplog.text
    lease.release()
    spans = lease_intervals(read_lease_log(tmp_path))["h:0"]
    assert [s[2] for s in spans] == ["victim (no release: holder died)", "next"]


def test_unusable_lease_file_names_the_path(tmp_path: Path) -> None:
    path = lease_path(tmp_path, Device("h", 3))
    path.mkdir(parents=True)  # a directory where the lock file should be
    with pytest.raises(LeaseError, match=rf"device h:3: {path}"):
        acquire_device([Device("h", 3)], tmp_path)


# ------------------------------------------------------------------------------------------------ fan-out
def test_ten_benchmarks_spread_over_four_devices_on_two_hosts(tmp_path: Path) -> None:
    """4 devices on 2 simulated hosts, 10 artifacts: never two at once on a device, all 4 used, makespan
    within 1.5x of the ideal (10 jobs x job time / 4 devices)."""
    run = _sim().run_fleet({"host-a": [0, 1], "host-b": [0, 1]}, 10, tmp_path, batches=10, batch_ms=200)
    spans = lease_intervals(read_lease_log(tmp_path))
    assert sorted(spans) == ["host-a:0", "host-a:1", "host-b:0", "host-b:1"]  # all four used
    assert sum(len(v) for v in spans.values()) == 10
    for device, intervals in spans.items():
        intervals.sort()
        for (_, end, lab), (start, _, nxt) in itertools.pairwise(intervals):
            assert end <= start, f"{device}: {lab} and {nxt} overlap"
    assert run.makespan_s <= 1.5 * run.ideal_s, f"makespan {run.makespan_s:.2f} s vs ideal {run.ideal_s:.2f} s"


# ------------------------------------------------------------------------------------------------ the benchmark step
@pytest.fixture()
def ascend_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """This process as fleet host 'npu-b' with devices 0,1 (npu-smi double); the run's config opts."""
    for k, v in _sim().doubles_env([0, 1]).items():
        monkeypatch.setenv(k, v)
    for var in ("REID_DOUBLE_NPU_BUSY_FILE", "REID_DOUBLE_DROP_OUTPUT", "REID_DOUBLE_ATC_FAIL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("REID_FLEET_HOST", "npu-b")
    (tmp_path / "no-cann").mkdir()
    return [
        *("VALIDATION.ASCEND.INSTALL_PATH", str(tmp_path / "no-cann")),
        *("VALIDATION.ASCEND.HOSTS", "['npu-a: 0,1', 'npu-b: 0,1']"),
        *("VALIDATION.ASCEND.DEVICE_IDS", "[0, 1]"),
        *("VALIDATION.ASCEND.LEASE_DIR", str(tmp_path / "leases")),
        *("VALIDATION.ASCEND.BUSY_POLL_S", "0.1"),
        *("VALIDATION.BENCH.WARMUP", "1"),
        *("VALIDATION.BENCH.PURE_BATCHES", "2"),
    ]


def test_benchmark_step_leases_a_device_and_passes_the_data_once(
    ascend_host: list[str], tiny_onnx: Path, small_cache, tmp_path: Path
) -> None:
    from reid_tasks import steps
    from reid_tasks.targets import get_target

    ctx = {"opts": ascend_host, "run_key": "test/fleet", "run_dir": str(tmp_path / "run")}
    art = get_target("ascend310", steps.cfg_of(ctx)).convert(tiny_onnx, 4, "fp32", tmp_path / "art")
    bench = steps.benchmark_artifact(ctx, art.to_dict(), {"cache_dir": str(small_cache.dir)})
    perf, pure = bench["perf"], bench["perf_pure"]
    assert (perf["device_host"], perf["device_id"]) == ("npu-b", 0) == (pure["device_host"], pure["device_id"])
    assert perf["repeats"] == 1 and perf["samples"] == len(small_cache)  # one pass over the data
    assert len(perf["extra"]["passes"]) == 1
    assert pure["mode"] == "pure" and pure["repeats"] == 3  # VALIDATION.BENCH.REPEATS: the stable figures
    assert bench["budget"]["images"] == len(small_cache) and bench["budget"]["throughput"] == pure["throughput_median"]
    events = read_lease_log(tmp_path / "leases")
    assert [(e["event"], e["host"], e["device"]) for e in events] == [("acquire", "npu-b", 0), ("release", "npu-b", 0)]
    assert "test/fleet ascend310 bs4 fp32" in events[0]["label"]


def test_benchmark_step_refuses_a_pass_that_cannot_fit(
    ascend_host: list[str], tiny_onnx: Path, small_cache, tmp_path: Path
) -> None:
    from reid_tasks import steps
    from reid_tasks.errors import RunWontFit
    from reid_tasks.targets import get_target

    opts = [*ascend_host, "VALIDATION.BENCH.TASK_TIMEOUT_S", "30", "VALIDATION.PURE", "False"]
    opts += ["VALIDATION.BENCH.MIN_THROUGHPUT", "0.01"]
    ctx = {"opts": opts, "run_key": "test/fit", "run_dir": str(tmp_path / "run")}
    art = get_target("ascend310", steps.cfg_of(ctx)).convert(tiny_onnx, 4, "fp32", tmp_path / "art")
    with pytest.raises(RunWontFit) as err:
        steps.benchmark_artifact(ctx, art.to_dict(), {"cache_dir": str(small_cache.dir)})
    msg = str(err.value)
    assert f"one pass over {len(small_cache)} images at 0.0 img/s" in msg and "MIN_THROUGHPUT" in msg
    assert "TASK_TIMEOUT_S" in msg and "ascend310 bs4 fp32" in msg
    assert not (tmp_path / "run" / "artifacts" / "ascend310" / "bs4_fp32" / "bench" / "features.npy").exists()


def test_unknown_device_in_a_run_is_named_before_any_work(ascend_host: list[str], tmp_path: Path) -> None:
    from reid_tasks import steps

    opts = [*ascend_host, "VALIDATION.ASCEND.DEVICE_IDS", "[0, 5]"]
    ctx = {"opts": opts, "run_key": "test/dev", "run_dir": str(tmp_path / "run")}
    art = {"target": "ascend310", "path": str(tmp_path / "x.om"), "sha256": "0", "batch_size": 4}
    art |= {"precision": "fp32", "build_seconds": 0.0, "command": "atc"}
    with pytest.raises(FleetError, match=r"device 5 .* not declared by any host .*npu-a: 0,1; npu-b: 0,1"):
        steps.benchmark_artifact(ctx, art, {"cache_dir": str(tmp_path)})


def test_inference_counts_and_budget_figures() -> None:
    from reid_tasks.runcost import dataset_pass_budget, inferences_per_artifact

    before = inferences_per_artifact(19281, 16, warmup=2, repeats=3, pure_batches=20, dataset_passes=3)
    after = inferences_per_artifact(19281, 16, warmup=2, repeats=3, pure_batches=20, dataset_passes=1)
    assert before["dataset"] == (2 + 3 * 1206) * 16 and after["dataset"] == (2 + 1206) * 16
    assert before["pure"] == after["pure"] == (2 + 60) * 16
    b = dataset_pass_budget(19281, 20.0, min_throughput=5, left_s=3 * 3600, what="x")
    assert b.expected_s == pytest.approx(964.05) and b.timeout_s == pytest.approx(964.05 * 3 + 60)
    floor = dataset_pass_budget(19281, None, min_throughput=5, left_s=3 * 3600, what="x")  # end-to-end already
    assert floor.timeout_s == pytest.approx(19281 / 5 + 60) and "MIN_THROUGHPUT" in floor.source


def test_availability_is_this_hosts_devices(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """On npu-b (whose npu-smi lists only device 1) the target is available and runs on device 1 by default;
    on a host the fleet does not declare it is unavailable, saying so."""
    from reid_tasks.targets.ascend import AscendTarget

    for k, v in _sim().doubles_env([1]).items():
        monkeypatch.setenv(k, v)
    opts = ["VALIDATION.ASCEND.INSTALL_PATH", str(tmp_path), "VALIDATION.ASCEND.DEVICE_IDS", "[0, 1]"]
    opts += ["VALIDATION.ASCEND.HOSTS", "['npu-a: 0', 'npu-b: 1']"]
    monkeypatch.setenv("REID_FLEET_HOST", "npu-b")
    t = AscendTarget(load_config(opts=opts))
    ok, reason = t.available()
    assert ok, reason
    assert t.device_id() == 1
    monkeypatch.setenv("REID_FLEET_HOST", "npu-z")
    ok, reason = t.available()
    assert not ok and "host 'npu-z'" in reason and "npu-a: 0; npu-b: 1" in reason
