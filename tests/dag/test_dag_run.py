"""``dag.test()`` end to end on a tiny synthetic set, metadata and results in SQLite: a clean run, a
regressed run (the notifier posts to a local webhook, the run is red), Params refused on trigger, and a
retried record step that does not duplicate rows."""

from __future__ import annotations

import json
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import pytest

from .conftest import airflow_env, last_json, run_py

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

RUNNER = __import__("pathlib").Path(__file__).with_name("dag_test_runner.py")
#: deployment settings of the test (a trigger may not set them): fast benchmarks, the test data allowed
FAST_DEPLOYMENT = """
VALIDATION:
  ALLOWED_ROOTS: ['{root}']
  BENCH: {{WARMUP: 1, PURE_BATCHES: 2}}
  PARITY: {{SAMPLE: 32}}
"""


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list] = []

    def do_POST(self):
        type(self).received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def dag_runs(airflow_home, tmp_path_factory, synthetic_market, demo_checkpoint):
    tmp = tmp_path_factory.mktemp("dag-run")
    hook = type("Hook", (_Hook,), {"received": []})
    server = HTTPServer(("127.0.0.1", 0), hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    db = tmp / "results.sqlite"
    (tmp / "deployment.yml").write_text(FAST_DEPLOYMENT.format(root=synthetic_market.parent))
    env = airflow_env(
        airflow_home,
        REID_DATA_DIR=str(tmp / "data"),
        REID_RESULTS_DB_URL=f"sqlite:///{db}",
        REID_CONFIG_FILE=str(tmp / "deployment.yml"),
        AIRFLOW_CONN_REID_ALERTS_WEBHOOK=json.dumps(
            {"conn_type": "http", "host": f"http://127.0.0.1:{server.server_port}/reid-alerts"}
        ),
    )
    base = {
        "targets": ["onnxruntime"],
        "batch_sizes": [1, 2],
        "dataset_root": str(synthetic_market),
        "checkpoint": str(demo_checkpoint),
        "config_overrides": "VALIDATION.BENCH.REPEATS 1\n",  # a run setting, as the form's text
    }
    clean = dict(base)  # demo checkpoint: the published reference accuracy does not apply
    regressed = dict(base, reference_rank1=94.5, reference_map=85.9)  # explicit: the demo weights fall short
    # 6 artifacts, openvino bs4 fails to convert (injected by the runner; the clean runs never build it)
    partial = dict(base, targets=["onnxruntime", "openvino"], batch_sizes=[1, 2, 4])
    try:
        proc = run_py(
            RUNNER,
            env,
            "--bad-conf",
            json.dumps(dict(base, batch_sizes=[0])),
            "--conf",
            json.dumps(clean),
            "--conf",
            json.dumps(regressed),
            "--conf",
            json.dumps(partial),
            "--fail-convert",
            "openvino:4:fp32",
            "--record-again",
            "2",
            timeout=840,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    out = last_json(proc.stdout)
    out["webhook"] = hook.received
    out["db"] = db
    out["log"] = proc.stdout[-20000:]
    return out


def states(run: dict) -> dict[str, list[str]]:
    by_task: dict[str, list[str]] = {}
    for task_id, _map_index, state, _try in run["tis"]:
        by_task.setdefault(task_id, []).append(state)
    return by_task


def test_trigger_with_bad_params_is_refused(dag_runs):
    assert dag_runs["bad_conf_error"] is not None
    assert dag_runs["bad_conf_error"].startswith("ParamValidationError"), dag_runs["bad_conf_error"]
    assert "batch_sizes" in dag_runs["bad_conf_error"]


def test_clean_run_succeeds_and_skips_unchosen_targets(dag_runs):
    run = dag_runs["runs"][0]
    s = states(run)
    assert run["state"] == "success", run["tis"]
    for task in ("prepare_run", "export_model", "preprocess_data", "reference_features", "onnxruntime.plan"):
        assert s[task] == ["success"], task
    for step in ("convert", "benchmark", "evaluate"):
        assert s[f"onnxruntime.artifact.{step}"] == ["success", "success"], step  # one per batch size
    for target in ("ascend310", "openvino", "pytorch"):
        assert set(s[f"{target}.plan"]) == {"skipped"} and set(s[f"{target}.artifact.evaluate"]) == {"skipped"}
    for task in ("record_results", "check_regressions", "finish"):
        assert s[task] == ["success"], task


def _rows(db, sql, *params):
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


def test_results_are_recorded_per_series(dag_runs):
    first = f"reid_validation/{dag_runs['runs'][0]['run_id']}"
    assert dag_runs["runs"][0]["status"] == "success"
    assert _rows(dag_runs["db"], "SELECT trigger FROM validation_runs WHERE run_key = ?", first) == [("manual",)]
    acc = _rows(
        dag_runs["db"],
        "SELECT a.target, a.batch_size, a.precision FROM accuracy_results a JOIN validation_runs r "
        "ON a.run_id = r.id WHERE r.run_key = ? ORDER BY 2",
        first,
    )
    assert acc == [("onnxruntime", 1, "fp32"), ("onnxruntime", 2, "fp32")]
    modes = _rows(
        dag_runs["db"],
        "SELECT p.batch_size, p.mode FROM perf_results p JOIN validation_runs r ON p.run_id = r.id "
        "WHERE r.run_key = ? ORDER BY 1, 2",
        first,
    )
    assert modes == [(1, "pure"), (1, "real"), (2, "pure"), (2, "real")]


def test_retried_record_step_does_not_duplicate_rows(dag_runs):
    again = dag_runs["record_again"]
    assert again["before"] == again["after"]
    assert again["before"]["accuracy_results"] >= 2
    assert all(r["accuracy_rows"] == 2 and r["perf_rows"] == 4 for r in again["returned"])


def test_regression_fails_the_run_notifies_and_marks_it_regressed(dag_runs):
    run = dag_runs["runs"][1]
    s = states(run)
    assert run["state"] == "failed"
    assert s["check_regressions"] == ["failed"]
    assert s["record_results"] == ["success"] and s["finish"] == ["success"]
    key = f"reid_validation/{run['run_id']}"
    assert run["status"] == "regressed"
    rules = {
        r
        for (r,) in _rows(
            dag_runs["db"],
            "SELECT a.rule FROM alerts a JOIN validation_runs r ON a.run_id = r.id WHERE r.run_key = ?",
            key,
        )
    }
    assert "accuracy_reference" in rules
    [payload] = [p for p in dag_runs["webhook"] if p["run_key"] == key]
    assert payload["source"] == "reid-validate"
    assert {a["rule"] for a in payload["alerts"]} == rules
    assert "vs reference 94.50" in payload["text"]


def test_one_failed_artifact_keeps_the_others_and_fails_the_run(dag_runs):
    run = dag_runs["runs"][2]
    s = states(run)
    key = f"reid_validation/{run['run_id']}"
    alerts = _rows(
        dag_runs["db"],
        "SELECT count(*) FROM alerts a JOIN validation_runs r ON a.run_id = r.id WHERE r.run_key = ?",
        key,
    )[0][0]
    assert run["state"] == "failed" and run["status"] == ("regressed" if alerts else "failed")  # never success
    assert sorted(s["openvino.artifact.convert"]) == ["failed", "success", "success"]
    assert sorted(s["openvino.artifact.evaluate"]) == ["success", "success", "upstream_failed"]
    assert s["onnxruntime.artifact.evaluate"] == ["success"] * 3
    assert s["record_results"] == ["success"] and s["finish"] == ["success"]
    assert s["check_regressions"] == ["failed"]  # red, and says why
    acc = _rows(
        dag_runs["db"],
        "SELECT a.target, a.batch_size FROM accuracy_results a JOIN validation_runs r ON a.run_id = r.id "
        "WHERE r.run_key = ? ORDER BY 1, 2",
        key,
    )
    assert acc == [("onnxruntime", 1), ("onnxruntime", 2), ("onnxruntime", 4), ("openvino", 1), ("openvino", 2)]
    [failure_file] = (dag_runs["db"].parent / "data").rglob("failures/openvino_bs4_fp32.json")
    failure = json.loads(failure_file.read_text())
    assert failure["stage"] == "convert" and failure["attempt"] == 1
    assert failure["message"].startswith("PrecisionNotSupported: injected by the test: openvino cannot build bs4")
