"""Trigger attacks through a real ``dag.test()`` of reid_validation (issue 10): each is refused, either by
the Params schema when the run is created or by prepare_run before anything else runs, and nothing is
written (no run directory, no results database, no demo data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import airflow_env, last_json, run_py

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

RUNNER = Path(__file__).with_name("dag_test_runner.py")

#: conf -> where it must be refused ("params": Airflow refuses to create the run; "prepare_run": the run fails
#: at its first task) and what the message must name
ATTACKS = [
    ({"trust_checkpoint": True}, "prepare_run", ["'trust_checkpoint'", "VALIDATION.TRUST_CHECKPOINT"]),
    ({"results_db_url": "sqlite:////tmp/reid-elsewhere.sqlite"}, "prepare_run", ["'results_db_url'"]),
    ({"config_overrides": {"VALIDATION.ASCEND.BENCHMARK_BIN": "/bin/sh"}}, "params", ["BENCHMARK_BIN"]),
    ({"config_overrides": ["VALIDATION.ASCEND.INSTALL_PATH /tmp/evil"]}, "params", ["INSTALL_PATH"]),
    ({"config_overrides": {"VALIDATION.RULES.PERF_Z": 100.0}}, "params", ["PERF_Z"]),
    ({"config_overrides": "VALIDATION.PARITY.FP32_MAX_ABS 1.0"}, "params", ["FP32_MAX_ABS"]),
    ({"config_overrides": "TEST.NECK_FEAT before\nVALIDATION.ARTIFACTS_ROOT /tmp"}, "params", ["ARTIFACTS_ROOT"]),
    ({"dataset_root": "/etc"}, "prepare_run", ["'/etc'", "outside the allowed roots"]),
    ({"dataset_root": "../.."}, "prepare_run", ["'..' is not allowed"]),
    ({"config_file": "/etc/passwd"}, "prepare_run", ["'/etc/passwd'", "outside the allowed roots"]),
    ({"reference_rank1": 150}, "params", ["150"]),
]


@pytest.fixture(scope="module")
def attacks(airflow_home, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dag-attacks")
    data = tmp / "data"
    data.mkdir()
    env = airflow_env(
        airflow_home,
        REID_DATA_DIR=str(data),
        REID_RESULTS_DB_URL=f"sqlite:///{data / 'results.sqlite'}",
        REID_CONFIG_FILE=str(tmp / "deployment.yml"),
    )
    (tmp / "deployment.yml").write_text("VALIDATION:\n  DEMO: true\n")  # even a demo run is not started
    args = [a for conf, _, _ in ATTACKS for a in ("--attack", json.dumps(conf))]
    proc = run_py(RUNNER, env, *args, timeout=840)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    out = last_json(proc.stdout)
    out["log"] = proc.stdout + proc.stderr
    return out


@pytest.mark.parametrize("index", range(len(ATTACKS)), ids=[json.dumps(a[0])[:60] for a in ATTACKS])
def test_attack_is_refused_and_nothing_is_written(attacks, index):
    conf, where, names = ATTACKS[index]
    result = attacks["attacks"][index]
    assert result["conf"] == conf
    assert result["written"] == [], result
    if where == "params":
        assert (result.get("error") or "").startswith("ParamValidationError"), result
        message = result["error"]
    else:
        assert result.get("error") is None and result["state"] == "failed", result
        ran = {t[0]: t[2] for t in result["tis"]}
        assert ran["prepare_run"] == "failed", result
        assert not [t for t, s in ran.items() if s == "success" and t != "finish"], result
        message = next((ln for ln in attacks["log"].splitlines() if "TriggerRefused" in ln and names[0] in ln), "")
    for name in names:
        assert name in message, (name, message or attacks["log"][-3000:])


def test_passwd_is_never_echoed(attacks):
    lines = [ln for ln in Path("/etc/passwd").read_text().splitlines() if ln.strip()]
    assert not [ln for ln in lines if ln in attacks["log"]]
