"""A target from another distribution: one module + one entry point, and it appears everywhere.

The toy distribution lives in a temporary site dir (a module and its ``.dist-info`` with an entry point in
``reid_validate.targets``) put on PYTHONPATH of subprocesses: ``reid-validate targets`` lists it with the queue
and pool it declares, its config node joins the config tree with its choices checked, the trigger form offers it,
and a ``dag.test()`` run validates it on the queue and pool it declares.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, last_json, quick_conf, run_env, run_py

TOY_MODULE = '''
from typing import Any, ClassVar

from reid_tasks.targets.onnxruntime import OnnxRuntimeTarget
from reid_tasks.targets.records import Scheduling


class ToyTarget(OnnxRuntimeTarget):
    """ONNX Runtime under another name, queue and pool: stands for a new accelerator."""

    name: ClassVar[str] = "toy"
    queue: ClassVar[str] = "toy_queue"
    config_node: ClassVar[str | None] = "TOY"
    config_defaults: ClassVar[dict[str, Any]] = {"FLAVOUR": "plain", "DEVICES": [0, 1]}
    config_choices: ClassVar[dict[str, tuple[Any, ...]]] = {"FLAVOUR": ("plain", "spicy")}

    def scheduling(self) -> Scheduling:
        return Scheduling(queue=self.queue, pool="toy_devices", pool_slots=len(self.cfg.VALIDATION.TOY.DEVICES))
'''


@pytest.fixture(scope="module")
def toy_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("toy-site")
    (site / "toy_reid_target.py").write_text(TOY_MODULE)
    info = site / "toy_reid_target-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-reid-target\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[reid_validate.targets]\ntoy = toy_reid_target:ToyTarget\n")
    return site


def _env(site: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(base if base is not None else os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT), env.get("PYTHONPATH", "")])
    return env


def test_cli_lists_the_plugin_target(toy_site: Path) -> None:
    cli = Path(sys.executable).with_name("reid-validate")
    out = subprocess.run(
        [str(cli), "targets", "--format", "json"], env=_env(toy_site), capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["toy"]["queue"] == "toy_queue" and rows["toy"]["pool"] == "toy_devices"
    assert rows["toy"]["available"] and rows["toy"]["precisions"] == ["fp32", "int8"]
    assert {"onnxruntime", "ascend310"} <= set(rows)


_CONFIG = """
import json
from reid_tasks.config import load_config, overrides
from reid_tasks.errors import ConfigError
cfg = load_config(opts=["VALIDATION.TOY.FLAVOUR", "spicy"])
try:
    load_config(opts=["VALIDATION.TOY.FLAVOUR", "bland"])
    refused = None
except ConfigError as exc:
    refused = str(exc)
print(json.dumps({"devices": list(cfg.VALIDATION.TOY.DEVICES), "overrides": overrides(cfg), "refused": refused}))
"""


def test_plugin_config_node_joins_the_tree(toy_site: Path) -> None:
    out = subprocess.run([sys.executable, "-c", _CONFIG], env=_env(toy_site), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["devices"] == [0, 1]
    assert result["overrides"] == {"VALIDATION.TOY.FLAVOUR": "spicy"}
    assert "VALIDATION.TOY.FLAVOUR" in result["refused"] and "'spicy'" in result["refused"]


_RUNNER = """
import json, os, sys
from airflow import settings
from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
assert not bag.import_errors, bag.import_errors
dag = bag.dags["reid_validation"]
out = {
    "enum": dag.params.get_param("targets").schema["items"]["enum"],
    "toy_tasks": {t.task_id: [t.queue, t.pool] for t in dag.tasks if t.task_id.startswith("toy.")},
}
dr = dag.test(run_conf=json.loads(sys.argv[1]))
out["state"] = str(dr.state)
tis = dr.get_task_instances(session=settings.Session())
out["tis"] = sorted([ti.task_id, ti.map_index, str(ti.state)] for ti in tis)
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_dag_offers_schedules_and_runs_the_plugin_target(
    toy_site: Path, airflow_home: Path, synthetic_market: Path, demo_checkpoint: Path, tmp_path: Path
) -> None:
    # the test data lie outside the data dir: allow them as a deployment would
    env = _env(toy_site, run_env(airflow_home, tmp_path, REID_ALLOWED_ROOTS=str(synthetic_market.parent)))
    conf = quick_conf("toy", synthetic_market, demo_checkpoint)
    proc = run_py(_RUNNER, env, json.dumps(conf), timeout=840)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    out = last_json(proc.stdout)
    assert "toy" in out["enum"]
    assert out["toy_tasks"]["toy.artifact.convert"] == ["toy_queue", "default_pool"]
    assert out["toy_tasks"]["toy.artifact.benchmark"] == ["toy_queue", "toy_devices"]
    states = {(task, idx): state for task, idx, state in out["tis"]}
    assert out["state"] == "success", out["tis"]
    for step in ("convert", "benchmark", "evaluate"):
        assert states[(f"toy.artifact.{step}", 0)] == "success", step
    assert states[("onnxruntime.plan", -1)] == "skipped"
