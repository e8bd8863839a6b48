"""The DAG folder imports with zero errors, opens no connection and imports no heavy module while parsing
(like Airflow's own test_example_dags.py)."""

from __future__ import annotations

import json

from .conftest import DAGS, airflow_env, last_json, run_py

PARSE = r"""
import json, socket, sys
attempts = []

def refuse(self, *args, **kwargs):
    attempts.append(repr(args))
    raise OSError("network access while parsing the DAG folder")

socket.socket.connect = refuse
socket.socket.connect_ex = refuse
import sqlalchemy.engine
orig_connect = sqlalchemy.engine.Engine.connect

def no_db(self, *args, **kwargs):
    attempts.append(f"db: {self.url}")
    raise RuntimeError("database access while parsing the DAG folder")

sqlalchemy.engine.Engine.connect = no_db
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1], known_pools=set(json.loads(sys.argv[2])))
heavy = sorted(m for m in ("torch", "onnx", "onnxruntime", "openvino", "cv2", "nncf", "matplotlib", "tensorrt")
               if m in sys.modules)
print(json.dumps({
    "errors": {k: str(v)[-2000:] for k, v in bag.import_errors.items()},
    "warnings": sorted(w.message for w in bag.dag_warnings),
    "dags": sorted(bag.dag_ids),
    "attempts": attempts,
    "heavy": heavy,
}))
"""


def test_dag_folder_parses_cleanly(tmp_path):
    from .conftest import setup_pools

    pools = sorted(set(setup_pools()) | {"default_pool"})
    proc = run_py(PARSE, airflow_env(tmp_path), str(DAGS), json.dumps(pools), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = last_json(proc.stdout)
    assert out["errors"] == {}
    assert out["dags"] == ["reid_maintenance", "reid_validation"]
    assert out["warnings"] == []  # e.g. a pool the setup does not create
    assert out["attempts"] == [], "parsing must not open network or database connections"
    assert out["heavy"] == [], f"heavy modules imported while parsing: {out['heavy']}"


MAINTENANCE = r"""
import json, runpy, sys, time
import airflow.sdk  # the dag-processor's situation: Airflow already imported
t0 = time.perf_counter()
ns = runpy.run_path(sys.argv[1])
dt = time.perf_counter() - t0
dag = next(v for v in ns.values() if isinstance(v, airflow.sdk.DAG))
print(json.dumps({
    "ms": dt * 1000,
    "ours": sorted(m for m in sys.modules if m.startswith("reid_tasks")),
    "dag_id": dag.dag_id, "schedule": str(dag.schedule), "tasks": sorted(dag.task_ids),
}))
"""


def test_maintenance_dag_parses_cheaply_and_runs_gc_daily(tmp_path):
    """The retention DAG imports nothing of ours at parse time (only its task does, when it runs)."""
    proc = run_py(MAINTENANCE, airflow_env(tmp_path), str(DAGS / "reid_maintenance.py"), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = last_json(proc.stdout)
    assert out["ours"] == [] and out["ms"] < 500
    assert (out["dag_id"], out["schedule"], out["tasks"]) == ("reid_maintenance", "@daily", ["collect_garbage"])
