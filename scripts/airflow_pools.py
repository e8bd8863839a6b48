"""Print the Airflow pools this project needs, as the JSON ``airflow pools import`` reads.

Every registered target declares the pool its benchmarks take and its size (``Target.scheduling()``): the
CPU targets share ``cpu_bench`` (1 slot: CPU benchmarks do not overlap); Ascend takes ``ascend310_devices``
with one slot per device of the fleet (VALIDATION.ASCEND.HOSTS x DEVICE_IDS; without HOSTS: DEVICE_IDS of one
host) -- the worker then leases a free device of its host (reid_tasks.fleet).

    python scripts/airflow_pools.py [--config-file FILE] [--hosts "npu-a: 0,1" --hosts "npu-b: 0,1"]
                                    [--device-ids 0,1] > pools.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from reid_tasks.config import load_config
from reid_tasks.targets import get_target, target_names


def pools(cfg: Any) -> dict[str, dict]:
    """{pool: {slots, description, include_deferred}} for the targets' declared scheduling."""
    out: dict[str, dict] = {}
    for name in target_names():
        sched = get_target(name, cfg).scheduling()
        pool = out.setdefault(
            sched.pool, {"slots": 1, "description": "benchmarks of reid_validation", "include_deferred": False}
        )
        pool["slots"] = max(pool["slots"], sched.pool_slots or 1)
        pool.setdefault("targets", []).append(name)
    for pool in out.values():
        targets = pool.pop("targets")
        pool["description"] = f"reid_validation benchmarks of {', '.join(targets)}: {pool['slots']} at a time"
    return dict(sorted(out.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", default=os.environ.get("REID_CONFIG_FILE") or None)
    parser.add_argument("--hosts", action="append", help="'host: id,id' (repeatable; default: the config's)")
    parser.add_argument("--device-ids", help="comma-separated Ascend device ids (default: the config's)")
    args = parser.parse_args(argv)
    opts = []
    if args.hosts:
        opts += ["VALIDATION.ASCEND.HOSTS", repr(list(args.hosts))]
    if args.device_ids:
        opts += ["VALIDATION.ASCEND.DEVICE_IDS", repr([int(x) for x in args.device_ids.split(",") if x.strip()])]
    json.dump(pools(load_config(args.config_file, opts)), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
