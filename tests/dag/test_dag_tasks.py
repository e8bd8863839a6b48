"""The DAG's own task bodies around the steps: check_regressions notifies and then fails; finish maps the
outcome to the run status."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowFailException

from reid_tasks import steps

ALERT = {
    "rule": "accuracy_reference",
    "metric": "rank1",
    "series_key": "onnxruntime/bs1/fp32",
    "observed": 54.2,
    "baseline": 94.5,
    "message": "onnxruntime/bs1/fp32 rank1: 54.17 % vs reference 94.50 %",
    "env_diff": {},
}


class FakeTI:
    def __init__(self, xcoms: dict | None = None):
        self.pushed: dict = {}
        self.xcoms = xcoms or {}

    def xcom_push(self, key, value):
        self.pushed[key] = value

    def xcom_pull(self, task_ids, key="return_value"):
        return self.xcoms.get((task_ids, key))


def verdict(alerts):
    return {
        "run_key": "reid_validation/r1",
        "status": "running",
        "alerts": alerts,
        "verdicts": [{"message": "onnxruntime/cpu/bs1/fp32/real throughput: no history", "regressed": None}],
        "summary": ["no verdict: onnxruntime/cpu/bs1/fp32/real throughput: no history"],
    }


def test_check_regressions_notifies_then_fails(dag_module, monkeypatch, capsys):
    monkeypatch.setattr(steps, "check_regressions", lambda ctx: verdict([ALERT]))
    for conn_id in ("REID_ALERTS_WEBHOOK", "REID_ALERTS_SMTP"):
        monkeypatch.delenv(f"AIRFLOW_CONN_{conn_id}", raising=False)
    ti = FakeTI()
    with pytest.raises(AirflowFailException) as err:
        dag_module.check_regressions.function({"run_key": "reid_validation/r1"}, {"perf_rows": 2}, ti=ti)
    assert "1 regression alert(s)" in str(err.value) and ALERT["message"] in str(err.value)
    assert ti.pushed == {"alert_count": 1}
    # no alert connection configured: the notifier wrote the alert text to the (task) log
    out = capsys.readouterr()
    logged = out.out + out.err
    assert "[reid-validate] 1 regression alert in reid_validation/r1" in logged
    assert ALERT["message"] in logged


def test_check_regressions_without_alerts_passes(dag_module, monkeypatch):
    monkeypatch.setattr(steps, "check_regressions", lambda ctx: verdict([]))
    ti = FakeTI()
    out = dag_module.check_regressions.function({"run_key": "reid_validation/r1"}, {}, ti=ti)
    assert ti.pushed == {"alert_count": 0}
    assert out["alerts"] == 0 and out["no_verdict"] == [
        "no verdict: onnxruntime/cpu/bs1/fp32/real throughput: no history"
    ]


@pytest.mark.parametrize(
    ("alert_count", "stored", "returned"),
    [(None, "failed", "failed"), (0, "success", "success"), (2, "success", "regressed")],
)
def test_finish_status(dag_module, monkeypatch, alert_count, stored, returned):
    calls = []
    monkeypatch.setattr(steps, "finish_run", lambda ctx, status: calls.append(status))
    ti = FakeTI({("check_regressions", "alert_count"): alert_count})
    assert dag_module.finish.function({"run_key": "k"}, ti=ti) == returned
    assert calls == [stored]  # the store turns 'success' with open alerts into 'regressed'


@pytest.mark.parametrize(("alert_count", "stored", "returned"), [(0, "failed", "failed"), (1, "success", "regressed")])
def test_finish_with_a_failed_artifact_is_never_success(dag_module, monkeypatch, alert_count, stored, returned):
    calls = []
    monkeypatch.setattr(steps, "finish_run", lambda ctx, status: calls.append(status))
    recorded = {"failures": [{"target": "onnxruntime", "batch_size": 1, "precision": "fp32", "stage": "convert"}]}
    ti = FakeTI({("check_regressions", "alert_count"): alert_count, ("record_results", "return_value"): recorded})
    assert dag_module.finish.function({"run_key": "k"}, ti=ti) == returned
    assert calls == [stored]


def test_finish_when_prepare_failed(dag_module, monkeypatch):
    monkeypatch.setattr(steps, "finish_run", lambda ctx, status: pytest.fail("nothing to finish"))
    assert dag_module.finish.function(None, ti=FakeTI()) == "failed"
