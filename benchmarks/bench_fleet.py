"""Fan-out of Ascend benchmarks over a fleet, with TEST DOUBLES (issue 13, section 1): makespan vs ideal.

10 artifacts, each a simulated benchmark of ``--batches`` x ``--batch-ms`` (a sleep standing for the NPU's
per-batch latency: NOT an Ascend figure), run by simulated hosts' worker processes (one per device, as Celery
concurrency = devices per host) that lease a device of their host (reid_tasks.fleet, the benchmark task's own
code; idleness from the npu-smi test double). Prints, for 1, 2 and 4 devices (4 = 2 hosts x 2 devices), the
makespan, the ideal (jobs x job time / devices), their ratio, the speed-up over 1 device, and checks the lease
log: never two benchmarks on one device at once, every device used.

    .venv/bin/python benchmarks/bench_fleet.py [--jobs 10] [--batches 10] [--batch-ms 100] [--runs 3]
"""

from __future__ import annotations

import argparse
import itertools
import platform
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "tests" / "doubles"))

import fleet_sim  # noqa: E402  (tests/doubles: the simulated fleet)

from reid_tasks.fleet import lease_intervals, read_lease_log  # noqa: E402

FLEETS = {
    1: {"host-a": [0]},
    2: {"host-a": [0], "host-b": [0]},
    4: {"host-a": [0, 1], "host-b": [0, 1]},
}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def one(hosts: dict[str, list[int]], args: argparse.Namespace) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as root:
        run = fleet_sim.run_fleet(hosts, args.jobs, root, batches=args.batches, batch_ms=args.batch_ms)
        spans = lease_intervals(read_lease_log(root))
    n_dev = sum(len(v) for v in hosts.values())
    if len(spans) != n_dev:
        raise SystemExit(f"only {sorted(spans)} of {n_dev} devices were used")
    for device, intervals in spans.items():
        for (_, end, a), (start, _, b) in itertools.pairwise(sorted(intervals)):
            if end > start:
                raise SystemExit(f"{device}: {a} and {b} overlap")
    return run.makespan_s, run.ideal_s


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=10)
    p.add_argument("--batches", type=int, default=10)
    p.add_argument("--batch-ms", type=float, default=100.0)
    p.add_argument("--runs", type=int, default=3, help="runs per fleet size; the median is reported")
    args = p.parse_args()
    print(f"CPU: {cpu_model()}; simulated job = {args.batches} x {args.batch_ms:g} ms; {args.jobs} jobs; TEST DOUBLES")
    print(f"{'devices':>7} {'makespan s':>11} {'ideal s':>8} {'x ideal':>8} {'speed-up':>9}")
    base = None
    for n, hosts in FLEETS.items():
        spans = [one(hosts, args) for _ in range(args.runs)]
        makespan = statistics.median(s[0] for s in spans)
        ideal = spans[0][1]
        base = base or makespan
        print(f"{n:>7} {makespan:>11.2f} {ideal:>8.2f} {makespan / ideal:>8.2f} {base / makespan:>9.2f}")
    print("lease logs: no device ever ran two benchmarks at once; every device was used")
    return 0


if __name__ == "__main__":
    sys.exit(main())
