"""Print the Airflow pools this project needs, as the JSON ``airflow pools import`` reads.

One pool per Ascend device (``ascend310_dev<N>``, 1 slot, for every VALIDATION.ASCEND.DEVICE_IDS) so a
device runs one benchmark at a time, and ``cpu_bench`` (1 slot) so CPU benchmarks do not overlap either.

    python scripts/airflow_pools.py [--config-file FILE] [--device-ids 0,1] > pools.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from reid_tasks.config import load_config

CPU_BENCH_POOL = "cpu_bench"
ASCEND_QUEUE = "ascend310"


def pools(device_ids: list[int]) -> dict[str, dict]:
    out = {
        CPU_BENCH_POOL: {
            "slots": 1,
            "description": "CPU benchmarks of reid_validation, one at a time",
            "include_deferred": False,
        }
    }
    for dev in device_ids:
        out[f"{ASCEND_QUEUE}_dev{int(dev)}"] = {
            "slots": 1,
            "description": f"Ascend 310 device {int(dev)}: one benchmark at a time",
            "include_deferred": False,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", default=os.environ.get("REID_CONFIG_FILE") or None)
    parser.add_argument("--device-ids", help="comma-separated Ascend device ids (default: the config's)")
    args = parser.parse_args(argv)
    if args.device_ids:
        ids = [int(x) for x in args.device_ids.split(",") if x.strip()]
    else:
        ids = [int(x) for x in load_config(args.config_file).VALIDATION.ASCEND.DEVICE_IDS]
    json.dump(pools(ids), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
