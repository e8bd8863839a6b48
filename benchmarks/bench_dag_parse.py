"""Parse cost of dags/reid_validation.py as the dag-processor pays it, against a minimal one-task DAG.

Each sample is a fresh interpreter that has imported only Airflow (``airflow`` and ``airflow.sdk``: what the
dag-processor's parsing process already holds); it then executes ONE DAG file the way the dag-processor does
(a new module) and times it. The minimal DAG imports only ``airflow.sdk``, so everything our DAG imports
(reid_tasks.config, yacs, the target classes, ...) counts against it. Samples alternate between the two files.
Prints the medians, their difference (budget: 50 ms) and the modules our DAG adds that must never load at parse
(numpy, torch, onnx, onnxruntime, openvino, cv2, nncf, sqlalchemy.orm, matplotlib).

    .venv/bin/python benchmarks/bench_dag_parse.py [-n 15]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DAG_FILE = ROOT / "dags" / "reid_validation.py"
BUDGET_MS = 50.0
HEAVY = ("numpy", "torch", "onnx", "onnxruntime", "openvino", "cv2", "nncf", "sqlalchemy.orm", "matplotlib")

MINIMAL_DAG = """
from __future__ import annotations
from datetime import UTC, datetime
from airflow.sdk import dag, task

@task
def only() -> None:
    pass

@dag(dag_id="minimal", schedule=None, start_date=datetime(2025, 1, 1, tzinfo=UTC), catchup=False)
def minimal() -> None:
    only()

minimal()
"""

CHILD = r"""
import importlib.util, json, sys, time
import airflow, airflow.sdk
before = set(sys.modules)
spec = importlib.util.spec_from_file_location("unusual_prefix_dagfile", sys.argv[1])
module = importlib.util.module_from_spec(spec)
t0 = time.perf_counter()
spec.loader.exec_module(module)
ms = (time.perf_counter() - t0) * 1000.0
print(json.dumps({"ms": ms, "added": sorted(set(sys.modules) - before)}))
"""


def parse_once(path: Path, pycache: Path) -> dict:
    """Execute one DAG file in a fresh interpreter that has imported only Airflow; its time and new modules.

    Bytecode is cached (under ``pycache``) as on a deployed dag-processor, whatever PYTHONDONTWRITEBYTECODE says.
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, env=env, cwd=ROOT, check=False
    )
    if proc.returncode:
        raise SystemExit(f"parse of {path} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def heavy_modules(added: list[str]) -> list[str]:
    """The modules of HEAVY (or their submodules) among ``added``."""
    return sorted({h for h in HEAVY for m in added if m == h or m.startswith(h + ".")})


def cpu_model() -> str:
    """CPU model name and the ISA extensions present (x86 SIMD or Arm)."""
    model = platform.processor() or platform.machine()
    flags: list[str] = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith(("flags", "Features")) and not flags:
                have = set(line.split(":", 1)[1].split())
                flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "neon", "asimd") if f in have]
    except OSError:
        pass
    return f"{model}, {platform.machine()} {' '.join(flags) or 'baseline ISA'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=15, help="samples per file (fresh interpreters)")
    args = parser.parse_args(argv)
    times: dict[str, list[float]] = {"minimal": [], "reid_validation": []}
    added: set[str] = set()
    with tempfile.TemporaryDirectory() as tmp:
        minimal = Path(tmp) / "minimal_dag.py"
        minimal.write_text(MINIMAL_DAG)
        files = {"minimal": minimal, "reid_validation": DAG_FILE}
        pycache = Path(tmp) / "pycache"
        for path in files.values():  # untimed: fills the bytecode cache
            parse_once(path, pycache)
        for i in range(args.n):
            order = ["minimal", "reid_validation"] if i % 2 == 0 else ["reid_validation", "minimal"]
            for name in order:
                result = parse_once(files[name], pycache)
                times[name].append(result["ms"])
                if name == "reid_validation":
                    added.update(result["added"])
    med = {k: statistics.median(v) for k, v in times.items()}
    diff = med["reid_validation"] - med["minimal"]
    heavy = heavy_modules(sorted(added))
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores), Python {platform.python_version()}")
    print(
        f"samples: {args.n} per file, each a fresh interpreter that imported only airflow + airflow.sdk"
        " (bytecode cached)"
    )
    print(f"minimal one-task DAG (airflow.sdk only)  median {med['minimal']:7.1f} ms")
    print(f"reid_validation DAG                      median {med['reid_validation']:7.1f} ms")
    print(f"ratio {med['reid_validation'] / med['minimal']:.2f}x; difference {diff:7.1f} ms", end="  ")
    print(f"(budget {BUDGET_MS:.0f} ms: {'OK' if diff <= BUDGET_MS else 'OVER'})")
    print(f"heavy modules imported by the DAG at parse: {heavy or 'none'}")
    return 0 if diff <= BUDGET_MS and not heavy else 1


if __name__ == "__main__":
    sys.exit(main())
