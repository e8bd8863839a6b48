"""Parse cost of dags/reid_validation.py against a minimal one-task DAG with the same imports.

Each sample is a fresh interpreter that first imports what both files import at module level
(airflow.sdk, its retry policy, reid_tasks.config, reid_tasks.targets) and executes the minimal DAG
once untimed (the SDK's lazy imports of decorators/operators); then it executes both DAG files (order
alternating between samples) the way the dag-processor does (a new module per file) and times each.
Prints the medians over N samples and their difference, which must stay <= 50 ms.

    .venv/bin/python benchmarks/bench_dag_parse.py [-n 9]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DAG_FILE = ROOT / "dags" / "reid_validation.py"
BUDGET_MS = 50.0

MINIMAL_DAG = """
from __future__ import annotations
import os
from datetime import datetime, timedelta, timezone
from typing import Any
from airflow.sdk import Param, TaskGroup, dag, task
from airflow.sdk.definitions.retry_policy import ExceptionRetryPolicy, RetryAction, RetryRule
from reid_tasks.config import load_config
from reid_tasks.targets import get_target, target_names

@task
def only() -> None:
    pass

@dag(dag_id="minimal", schedule=None, start_date=datetime(2025, 1, 1, tzinfo=timezone.utc), catchup=False)
def minimal() -> None:
    only()

minimal()
"""

CHILD = r"""
import importlib.util, json, sys, time
import airflow.sdk
import airflow.sdk.definitions.retry_policy
import reid_tasks.config, reid_tasks.targets
files = json.loads(sys.argv[1])
out = {}
# warm-up: a first DAG file pays the SDK's lazy imports (decorators, operators); not what we compare
warm = importlib.util.spec_from_file_location("unusual_prefix_warmup", sys.argv[2])
warm.loader.exec_module(importlib.util.module_from_spec(warm))
for name, path in files:
    spec = importlib.util.spec_from_file_location(f"unusual_prefix_{name}", path)
    module = importlib.util.module_from_spec(spec)
    t0 = time.perf_counter()
    spec.loader.exec_module(module)
    out[name] = (time.perf_counter() - t0) * 1000.0
# the share of the target modules (imported on first registry lookup), measured on a fresh copy of the registry
import importlib
for m in [m for m in sys.modules if m.startswith("reid_tasks.targets.")]:
    del sys.modules[m]
t0 = time.perf_counter()
for n in reid_tasks.targets.target_names():
    factory = reid_tasks.targets._REGISTRY[n]
    if isinstance(factory, str):
        importlib.import_module(factory.partition(":")[0])
out["target_modules"] = (time.perf_counter() - t0) * 1000.0
heavy = [m for m in ("torch", "onnx", "onnxruntime", "openvino", "cv2", "nncf", "matplotlib") if m in sys.modules]
print(json.dumps({"ms": out, "heavy": heavy}))
"""


def sample(minimal: Path, reverse: bool) -> dict:
    files = [("minimal", str(minimal)), ("reid_validation", str(DAG_FILE))]
    if reverse:
        files.reverse()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(files), str(minimal)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    if proc.returncode:
        raise SystemExit(f"parse sample failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("-n", type=int, default=9, help="samples (fresh interpreters)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        minimal = Path(tmp) / "minimal_dag.py"
        minimal.write_text(MINIMAL_DAG)
        samples = [sample(minimal, reverse=bool(i % 2)) for i in range(args.n)]
    heavy = sorted({m for s in samples for m in s["heavy"]})
    med = {k: statistics.median(s["ms"][k] for s in samples) for k in ("minimal", "reid_validation")}
    diff = med["reid_validation"] - med["minimal"]
    targets_ms = statistics.median(s["ms"]["target_modules"] for s in samples)
    print(f"samples: {args.n} fresh interpreters (shared imports preloaded)")
    print(f"minimal one-task DAG   median {med['minimal']:7.1f} ms")
    print(f"reid_validation DAG    median {med['reid_validation']:7.1f} ms")
    verdict = "OK" if diff <= BUDGET_MS else "OVER"
    print(f"difference                    {diff:7.1f} ms  (budget {BUDGET_MS:.0f} ms: {verdict})")
    print(f"  of which importing the registered target modules ~{targets_ms:5.1f} ms (first registry lookups)")
    print(f"heavy modules after parsing: {heavy or 'none'}")
    return 0 if diff <= BUDGET_MS and not heavy else 1


if __name__ == "__main__":
    sys.exit(main())
