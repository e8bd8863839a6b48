"""Parsing the DAG file imports nothing heavy: what the dag-processor pays on every parse stays small.

Measured the dag-processor's way (benchmarks/bench_dag_parse.py): a fresh interpreter that imported only
Airflow executes the DAG file; the modules it adds must include no numpy / torch / onnx / onnxruntime /
openvino / cv2 / nncf / sqlalchemy.orm / matplotlib. The timing itself is a benchmark, not a test.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .conftest import DAG_FILE, ROOT


def _bench():
    spec = importlib.util.spec_from_file_location(
        "bench_dag_parse_under_test", ROOT / "benchmarks" / "bench_dag_parse.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parsing_the_dag_imports_nothing_heavy(tmp_path: Path) -> None:
    bench = _bench()
    result = bench.parse_once(DAG_FILE, tmp_path / "pycache")
    assert any(m.startswith("reid_tasks.targets.") for m in result["added"])  # the targets were loaded
    assert bench.heavy_modules(result["added"]) == []


def test_the_check_sees_a_heavy_import(tmp_path: Path) -> None:
    bench = _bench()
    dag_file = tmp_path / "heavy_dag.py"
    dag_file.write_text("import numpy\n")
    assert bench.heavy_modules(bench.parse_once(dag_file, tmp_path / "pycache")["added"]) == ["numpy"]
