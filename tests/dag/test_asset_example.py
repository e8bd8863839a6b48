"""The documented asset example (examples/assets/): a training DAG updates the checkpoint asset, the validation
DAG is scheduled on it and, on a passing run, emits the validated model's asset that a promotion DAG watches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from reid_tasks.assets import CHECKPOINT_ASSET, VALIDATED_MODELS_ALIAS, validated_model_uri

from .conftest import DAG_FILE, ROOT, last_json, quick_conf, run_env, run_py

EXAMPLES = ROOT / "examples" / "assets"


@pytest.fixture(scope="module")
def dag_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DAG folder holding the validation DAG and the two example DAGs (what a deployment would have)."""
    folder = tmp_path_factory.mktemp("asset-dags")
    for src in (DAG_FILE, *sorted(EXAMPLES.glob("*.py"))):
        (folder / src.name).symlink_to(src)
    return folder


def test_example_dags_declare_the_assets(dag_folder: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import Asset, AssetAlias

    bag = DagBag(dag_folder=str(dag_folder))
    assert not bag.import_errors, bag.import_errors
    train, validate, promote = (bag.dags[d] for d in ("reid_example_train", "reid_validation", "reid_example_promote"))
    assert Asset(name=CHECKPOINT_ASSET) in train.task_dict["train"].outlets
    assert type(validate.timetable).__name__ == "AssetOrTimeSchedule"
    assert "0 2 * * *" in repr(validate.timetable.timetable)
    assert list(validate.timetable.asset_condition.objects) == [Asset(name=CHECKPOINT_ASSET)]
    assert AssetAlias(name=VALIDATED_MODELS_ALIAS) in validate.task_dict["publish"].outlets
    assert list(promote.timetable.asset_condition.objects) == [AssetAlias(name=VALIDATED_MODELS_ALIAS)]


def test_a_checkpoint_event_names_the_checkpoint_to_validate(dag_module) -> None:
    event = SimpleNamespace(extra={"checkpoint": "/models/new.pth"})
    older = SimpleNamespace(extra={"checkpoint": "/models/old.pth"})
    assert dag_module._asset_params({"triggering_asset_events": {dag_module.CHECKPOINT: [older, event]}}) == {
        "checkpoint": "/models/new.pth"
    }
    assert dag_module._asset_params({"triggering_asset_events": {}}) == {}
    assert dag_module._asset_params({}) == {}
    assert (
        dag_module._asset_params({"triggering_asset_events": {dag_module.CHECKPOINT: [SimpleNamespace(extra={})]}})
        == {}
    )


def test_without_cron_the_dag_runs_on_the_checkpoint_asset(dag_module, monkeypatch) -> None:
    monkeypatch.setenv("REID_SCHEDULE", "none")
    assert dag_module._timetable() == [dag_module.CHECKPOINT]


_RUNNER = """
import json, os, sys
from airflow import settings
from airflow.dag_processing.dagbag import DagBag
from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
from airflow.models.dag import DagModel
from sqlalchemy import select, update

bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
assert not bag.import_errors, bag.import_errors
session = settings.Session()
# asset events queue only unpaused DAGs (the test home pauses DAGs at creation)
session.execute(update(DagModel).where(DagModel.dag_id.in_(list(bag.dags))).values(is_paused=False))
session.commit()

def events(prefix):
    rows = session.execute(
        select(AssetModel.uri, AssetEvent.extra).join(AssetEvent, AssetEvent.asset_id == AssetModel.id)
        .where(AssetModel.uri.startswith(prefix))
    ).all()
    return [[uri, extra] for uri, extra in rows]

def queued():
    return sorted(session.scalars(select(AssetDagRunQueue.target_dag_id)).all())

out = {}
train = bag.dags["reid_example_train"].test()
out["train_state"] = str(train.state)
out["checkpoint_events"] = events(sys.argv[2])
out["queued_after_train"] = queued()
run = bag.dags["reid_validation"].test(run_conf=json.loads(sys.argv[1]))
out["validation_state"] = str(run.state)
out["model_events"] = events("reid-validate://validated-model/")
out["queued_after_validation"] = queued()
print(json.dumps(out, default=str))
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_checkpoint_event_queues_validation_and_a_pass_publishes_the_model(
    dag_folder: Path, airflow_home: Path, synthetic_market: Path, demo_checkpoint: Path, tmp_path: Path
) -> None:
    env = run_env(
        airflow_home,
        tmp_path,
        AIRFLOW__CORE__DAGS_FOLDER=str(dag_folder),
        REID_ALLOWED_ROOTS=str(synthetic_market.parent),  # the test data, outside the data dir
        REID_SCHEDULE="0 2 * * *",
        REID_EXAMPLE_CHECKPOINT_DIR=str(tmp_path / "ckpt"),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "reserialize"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    conf = quick_conf("onnxruntime", synthetic_market, demo_checkpoint)
    proc = run_py(_RUNNER, env, json.dumps(conf), CHECKPOINT_ASSET, timeout=840)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    out = last_json(proc.stdout)
    assert out["train_state"] == "success"
    [[uri, extra]] = out["checkpoint_events"]
    assert uri == CHECKPOINT_ASSET and Path(extra["checkpoint"]).parent == tmp_path / "ckpt"
    assert "reid_validation" in out["queued_after_train"]  # the scheduler would start a validation run
    assert out["validation_state"] == "success"
    from reid_tasks.utils import sha256_file

    sha = sha256_file(demo_checkpoint)
    [[uri, extra]] = out["model_events"]
    assert uri == validated_model_uri(sha)
    assert extra["checkpoint_sha256"] == sha and extra["run_key"].startswith("reid_validation/")
    assert extra["targets"] == ["onnxruntime"] and extra["checkpoint"] == str(demo_checkpoint)
    assert os.path.isfile(extra["checkpoint"])
    assert "reid_example_promote" in out["queued_after_validation"]  # the promotion DAG would run next
