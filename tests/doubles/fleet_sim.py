"""TEST DOUBLE of an Ascend fleet: several hosts' Celery workers taking benchmarks from one queue.

Each simulated host runs one worker process per device (Celery concurrency = the host's devices, prefetch 1),
every process pulls the next job from a shared queue, leases a device of its host through
``reid_tasks.fleet.acquire_device`` (the same code the benchmark task runs; idleness from the npu-smi double
when ``probe`` is on) and "benchmarks" for ``batches`` x ``batch_ms`` (a sleep: simulated per-batch latency,
never an Ascend figure). Used by tests/core/test_fleet.py and benchmarks/bench_fleet.py.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DOUBLES = Path(__file__).resolve().parent


def doubles_env(devices: list[int]) -> dict[str, str]:
    """PATH / PYTHONPATH with the Ascend tool doubles first, and the npu-smi double listing ``devices``."""
    return {
        "PATH": os.pathsep.join([str(DOUBLES / "bin"), str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "PYTHONPATH": str(DOUBLES / "python"),
        "REID_DOUBLE_NPU_DEVICES": ",".join(map(str, devices)),
    }


def npu_smi_probe(device_id: int) -> tuple[bool, str]:
    """(idle, why) from one ``npu-smi info`` call (the double, through the Ascend target's parser)."""
    from reid_tasks.targets.ascend import AscendTarget

    return AscendTarget().device_state(device_id)


def _worker(
    host: str,
    devices: list[int],
    jobs: mp.Queue,
    done: mp.Queue,
    ready: mp.Queue,
    lease_root: str,
    batches: int,
    batch_ms: float,
    probe: bool,
    timeout_s: float,
) -> None:
    os.environ.update(doubles_env(devices), REID_FLEET_HOST=host)
    from reid_tasks.fleet import Fleet, acquire_device

    fleet = Fleet.parse([f"{host}: {','.join(map(str, devices))}"], devices)
    if probe:
        npu_smi_probe(devices[0])  # imports done before the clock starts, as in a running Celery worker
    ready.put(host)
    while True:
        job = jobs.get()
        if job is None:
            return
        with acquire_device(
            fleet.local_devices(),
            lease_root,
            label=f"job{job}",
            probe=npu_smi_probe if probe else None,
            timeout_s=timeout_s,
            poll_s=0.05,
        ) as lease:
            for _ in range(batches):
                time.sleep(batch_ms / 1000)
            done.put((job, str(lease.device)))


@dataclass(frozen=True)
class FleetRun:
    makespan_s: float
    ideal_s: float  # jobs x job time / devices: a perfect spread with no overhead
    job_s: float
    assignments: dict[int, str]  # job -> "host:id"


def run_fleet(
    hosts: dict[str, list[int]],
    jobs: int,
    lease_root: str | os.PathLike[str],
    *,
    batches: int = 10,
    batch_ms: float = 50.0,
    probe: bool = True,
    timeout_s: float = 60.0,
) -> FleetRun:
    """Run ``jobs`` simulated benchmarks over the hosts' devices; wall time from the first job to the last."""
    ctx = mp.get_context("fork")
    q, done, ready = ctx.Queue(), ctx.Queue(), ctx.Queue()
    procs = [
        ctx.Process(
            target=_worker,
            args=(host, devs, q, done, ready, str(lease_root), batches, batch_ms, probe, timeout_s),
            daemon=True,
        )
        for host, devs in hosts.items()
        for _ in devs
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=60)
    t0 = time.perf_counter()
    for j in range(jobs):
        q.put(j)
    assignments = {}
    for _ in range(jobs):
        job, device = done.get(timeout=timeout_s * 2)
        assignments[job] = device
    makespan = time.perf_counter() - t0
    for _ in procs:
        q.put(None)
    for p in procs:
        p.join(10)
    job_s = batches * batch_ms / 1000
    n_dev = sum(len(v) for v in hosts.values())
    return FleetRun(makespan, jobs * job_s / n_dev, job_s, assignments)
