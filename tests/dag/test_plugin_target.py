"""A target from another distribution: one module + one entry point, and it appears everywhere.

The toy distribution lives in a temporary site dir (a module and its ``.dist-info`` with an entry point in
``reid_validate.targets``) put on PYTHONPATH of subprocesses: ``reid-validate targets`` lists it with the queue
and pool it declares, its config node joins the config tree with its choices checked, the trigger form offers it
and the run setting it declares (``toy_level``: on the allow-list, a form field bounded by the deployment's
``VALIDATION.TOY.MAX_LEVEL``, checked when triggered), and a ``dag.test()`` run validates it on the queue and pool
it declares. The DAG file names no target.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, airflow_env, last_json, quick_conf, run_env, run_py

TOY_MODULE = '''
from typing import Any, ClassVar

from reid_tasks.targets.onnxruntime import OnnxRuntimeTarget
from reid_tasks.targets.records import RunSetting, Scheduling


class ToyTarget(OnnxRuntimeTarget):
    """ONNX Runtime under another name, queue and pool: stands for a new accelerator."""

    name: ClassVar[str] = "toy"
    queue: ClassVar[str] = "toy_queue"
    config_node: ClassVar[str | None] = "TOY"
    config_defaults: ClassVar[dict[str, Any]] = {"FLAVOUR": "plain", "DEVICES": [0, 1], "LEVEL": 1, "MAX_LEVEL": 3}
    config_choices: ClassVar[dict[str, tuple[Any, ...]]] = {"FLAVOUR": ("plain", "spicy")}
    trigger_settings: ClassVar[tuple[RunSetting, ...]] = (
        RunSetting("toy_level", "LEVEL", "Toy level", "toy effort, 1..VALIDATION.TOY.MAX_LEVEL"),
    )

    @classmethod
    def trigger_fields(cls, cfg: Any) -> dict[str, dict[str, Any]]:
        toy = cfg.VALIDATION.TOY
        return {
            "toy_level": {
                "default": toy.LEVEL,
                "type": "integer",
                "allOf": [{"minimum": 1, "maximum": toy.MAX_LEVEL}],
                "description": f"How hard the toy works, 1..{toy.MAX_LEVEL}.",
            }
        }

    @classmethod
    def check_trigger_settings(cls, cfg: Any, deployment: Any) -> list[str]:
        level, top = cfg.VALIDATION.TOY.LEVEL, deployment.VALIDATION.TOY.MAX_LEVEL
        ok = isinstance(level, int) and 1 <= level <= top
        return [] if ok else [f"VALIDATION.TOY.LEVEL {level!r} not in 1..{top}"]

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


@pytest.fixture
def toy_deployment(tmp_path: Path) -> dict[str, str]:
    """A deployment allowing toy levels 1..2 (VALIDATION.TOY.MAX_LEVEL), its data dir under ``tmp_path``."""
    (tmp_path / "data").mkdir()
    (tmp_path / "deployment.yml").write_text("VALIDATION:\n  TOY:\n    MAX_LEVEL: 2\n")
    return {"REID_CONFIG_FILE": str(tmp_path / "deployment.yml"), "REID_DATA_DIR": str(tmp_path / "data")}


def test_the_dag_names_no_target() -> None:
    """No target's settings in the DAG file; its code (the docstring's examples aside) names no target."""
    text = (ROOT / "dags" / "reid_validation.py").read_text()
    for word in ("ASCEND", "SOC_VERSION", "soc_version", "device_ids"):
        assert word not in text, word
    tree = ast.parse(text)
    docstring = ast.get_docstring(tree, clean=False)
    words = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    words += [n.id for n in ast.walk(tree) if isinstance(n, ast.Name)]
    words += [n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)]
    assert docstring and [w for w in words if "ascend" in w.lower() and w != docstring] == []


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


_BOUNDARY = """
import json
from reid_tasks import settings
from reid_tasks.config import as_opts, load_config, overrides
from reid_tasks.errors import ConfigError

out = {
    "allow_list": settings.RUN_SETTABLE_KEYS,
    "params": list(settings.TRIGGER_PARAMS),
    "form_keys": settings.FORM_KEYS,
    "runnable": [settings.run_settable(k) for k in ("VALIDATION.TOY.LEVEL", "VALIDATION.TOY.MAX_LEVEL")],
}


def trigger(params):
    # what steps.prepare_triggered_run does before it writes anything
    try:
        settings.check_trigger_conf(params)
        deployment = settings.deployment_config()
        pairs = settings.trigger_pairs(params, deployment)
        cfg = load_config(None, as_opts(overrides(deployment)) + settings.flat(pairs))
        settings.check_run_values(cfg, deployment)
    except ConfigError as exc:
        return type(exc).__name__ + ": " + str(exc)
    return {"pairs": pairs, "level": cfg.VALIDATION.TOY.LEVEL}


out["triggers"] = [
    trigger({"toy_level": 2}),
    trigger({"config_overrides": "VALIDATION.TOY.LEVEL 2"}),
    trigger({"toy_level": 3}),
    trigger({"config_overrides": "VALIDATION.TOY.MAX_LEVEL 9"}),
    trigger({"toy_levels": 1}),
    trigger({"soc_version": "Ascend999"}),
]
print(json.dumps(out))
"""


def test_plugin_run_setting_crosses_the_trigger_boundary(toy_site: Path, toy_deployment: dict[str, str]) -> None:
    env = _env(toy_site, {**os.environ, **toy_deployment})
    out = subprocess.run([sys.executable, "-c", _BOUNDARY], env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["allow_list"]["VALIDATION.TOY.LEVEL"] == "toy effort, 1..VALIDATION.TOY.MAX_LEVEL"
    assert "VALIDATION.ASCEND.SOC_VERSION" in result["allow_list"]  # beside the other targets' declarations
    assert result["runnable"] == [True, False]
    params = result["params"]
    assert "toy_level" in params and "soc_version" in params
    assert params.index("precisions") < params.index("toy_level") < params.index("reference_rank1")
    assert result["form_keys"]["toy_level"] == "VALIDATION.TOY.LEVEL"
    good, good_override, too_high, deployment_key, unknown, ascend = result["triggers"]
    assert good == {"pairs": [["VALIDATION.TOY.LEVEL", 2]], "level": 2}
    assert good_override == {"pairs": [["VALIDATION.TOY.LEVEL", "2"]], "level": 2}
    assert too_high.startswith("TriggerRefused") and "VALIDATION.TOY.LEVEL 3 not in 1..2" in too_high
    assert deployment_key.startswith("TriggerRefused") and "VALIDATION.TOY.MAX_LEVEL is a deployment setting" in (
        deployment_key
    )
    assert unknown.startswith("TriggerRefused") and "'toy_levels' is not a setting of this DAG" in unknown
    assert "toy_level" in unknown  # the refusal lists what a trigger may set
    assert ascend.startswith("TriggerRefused") and "Ascend999" in ascend


_FORM = """
import importlib.util, json
from airflow.sdk.exceptions import ParamValidationError
from airflow.serialization.serialized_objects import DagSerialization

spec = importlib.util.spec_from_file_location("reid_validation_under_test", "dags/reid_validation.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
# as the scheduler / API see it (what validates a trigger's conf)
params = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(module.reid_validation_dag)).params


def refused(conf):
    try:
        params.deep_merge(conf).validate()
    except ParamValidationError as exc:
        return str(exc)
    return None


toy = params.get_param("toy_level")
out = {
    "names": list(params),
    "toy": {"value": toy.value, "schema": toy.schema, "description": toy.description},
    "lines_pattern": params.get_param("config_overrides").schema["pattern"],
    "accepted": refused({"toy_level": 2}),
    "refused": [refused({"toy_level": 3}), refused({"toy_level": 0}), refused({"toy_level": "2"})],
}
print(json.dumps(out))
"""


def test_dag_form_offers_the_plugin_run_setting(toy_site: Path, toy_deployment: dict[str, str], tmp_path: Path) -> None:
    env = _env(toy_site, airflow_env(tmp_path / "airflow-home", **toy_deployment))
    proc = run_py(_FORM, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = last_json(proc.stdout)
    names = out["names"]
    assert "toy_level" in names and {"soc_version", "device_ids"} <= set(names)
    assert out["toy"]["value"] == 1 and out["toy"]["description"] == "How hard the toy works, 1..2."
    schema = out["toy"]["schema"]
    assert schema == {"type": "integer", "allOf": [{"minimum": 1, "maximum": 2}], "title": "Toy level"}, schema
    assert "VALIDATION\\.TOY\\.LEVEL" in out["lines_pattern"]  # config_overrides accepts the key
    assert out["accepted"] is None
    assert all(out["refused"]), out["refused"]


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
    "toy_level": dag.params.get_param("toy_level").value,
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
    conf = {**quick_conf("toy", synthetic_market, demo_checkpoint), "toy_level": 2}  # its own run setting
    proc = run_py(_RUNNER, env, json.dumps(conf), timeout=840)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    out = last_json(proc.stdout)
    assert "toy" in out["enum"] and out["toy_level"] == 1
    assert out["toy_tasks"]["toy.artifact.convert"] == ["toy_queue", "default_pool"]
    assert out["toy_tasks"]["toy.artifact.benchmark"] == ["toy_queue", "toy_devices"]
    states = {(task, idx): state for task, idx, state in out["tis"]}
    assert out["state"] == "success", out["tis"]
    for step in ("convert", "benchmark", "evaluate"):
        assert states[(f"toy.artifact.{step}", 0)] == "success", step
    assert states[("onnxruntime.plan", -1)] == "skipped"
