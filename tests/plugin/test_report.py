"""The run report page and API, and the results page's table shape (main columns + row detail)."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from plugin_seed import CLI_RUN_KEY, DAG_ID, NIGHTS, run_id, run_key
from plugin_support import bearer

# The seed's Ascend 310 card figures (samples/s) as the product's config carries them.
ASCEND_REFERENCE = {1: 1446.188, 4: 1876.584, 8: 2207.092, 16: 2588.56, 32: 2068.128}
LAST = run_id(NIGHTS - 1)


def _report_url(night: int) -> str:
    return f"/reid/runs/{DAG_ID}/{quote(run_id(night), safe='')}"


def test_results_table_has_the_main_columns_and_a_detail_row(client, tokens, seeded_db):
    from plugins.reid_ui.queries import MAIN_COLUMNS

    html = client.get("/reid/", headers=bearer(tokens["viewer"])).text
    head = html[html.index('<table id="results"') : html.index("</thead>")]
    fields = [part.split('"')[0] for part in head.split('data-field="')[1:]]
    assert fields == [field for field, _, _ in MAIN_COLUMNS]  # in the product's order
    assert {"started_at", "run_key", "throughput_best", "rank1"} <= set(fields) and "mINP" not in fields
    assert html.count('<tr class="detail"') == seeded_db["rows"]
    detail = html[html.index('<tr class="detail"') : html.index("</tr>", html.index('<tr class="detail"'))]
    assert "Throughput median" in detail and "mINP" in detail and "Device" in detail
    assert f'href="/reid/runs/{DAG_ID}/{quote(LAST, safe="")}"' in html  # row -> run report
    assert f'href="/reid/report?run={CLI_RUN_KEY}"' in html
    assert "2 alerts</a>" in html  # the regressed night's marker (throughput and latency)
    assert 'src="/reid/static/nav.js"' in html


def test_report_of_a_regressed_run(client, tokens):
    r = client.get(_report_url(NIGHTS - 1), headers=bearer(tokens["viewer"]))
    assert r.status_code == 200
    html = r.text
    alerts = html[html.index('id="alerts"') : html.index('id="failures"')]
    assert "throughput" in alerts and "open" in alerts
    perf = html[html.index('id="performance"') : html.index('id="accuracy"')]
    assert "onnxruntime / cpu / fp32" in perf and "Seed reference" not in perf
    assert perf.count('<figure class="batch-chart"') == 1
    assert html[html.index('id="accuracy"') :].count("94.42") == 2  # bs1 and bs16
    changed = html[html.index('id="environment"') :]
    assert "environment.onnxruntime" in changed and "1.32.0" in changed and "1.33.0" in changed
    assert f'href="/dags/{DAG_ID}/runs/{quote(LAST, safe="")}" target="_top" data-airflow-nav' in html


def test_report_api_matches_the_store(client, tokens):
    r = client.get("/reid/api/report", params={"run": run_key(NIGHTS - 1)}, headers=bearer(tokens["viewer"]))
    assert r.status_code == 200
    report = r.json()
    (group,) = report["perf_groups"]
    assert [row["batch_size"] for row in group["rows"]] == [1, 16]
    assert group["rows"][1]["throughput_best"] == pytest.approx(400.0 * 0.8)
    assert "throughput" in {a["metric"] for a in report["alerts"]}
    assert report["changes"]["previous"]["run_key"] == run_key(NIGHTS - 2)
    assert report["changes"]["diff"] == [{"key": "environment.onnxruntime", "before": "1.32.0", "after": "1.33.0"}]


def test_first_run_has_nothing_to_compare_and_cli_runs_open_by_key(client, tokens):
    first = client.get("/reid/api/report", params={"run": run_key(0)}, headers=bearer(tokens["viewer"])).json()
    assert first["changes"] == {"previous": None, "diff": []}
    cli = client.get("/reid/report", params={"run": CLI_RUN_KEY}, headers=bearer(tokens["viewer"]))
    assert cli.status_code == 200 and "openvino / cpu / int8" in cli.text and "CLI run" in cli.text


def test_unknown_run_is_404_with_a_message(client, tokens):
    page = client.get(f"/reid/runs/other_dag/{quote('manual__x', safe='')}", headers=bearer(tokens["viewer"]))
    assert page.status_code == 404 and "No ReID validation results recorded for run" in page.text
    api = client.get("/reid/api/report", params={"run": "nope"}, headers=bearer(tokens["viewer"]))
    assert api.status_code == 404


def test_report_needs_login(client):
    r = client.get(_report_url(0))
    assert r.status_code == 302 and r.headers["location"].startswith("/auth/login")


def test_ascend_rows_show_the_seed_reference(rw_client, tokens, results_db):
    from reid_tasks.results import PerfRow, ResultsStore, RunInfo

    key = "ascend-check"
    with ResultsStore.open(results_db["url"]) as store:
        store.start_run(RunInfo(run_key=key, trigger="cli"))
        for bs, ref in ASCEND_REFERENCE.items():
            store.record_perf(
                key,
                PerfRow(
                    target="ascend310",
                    device_kind="Ascend310",
                    batch_size=bs,
                    precision="fp16",
                    mode="real",
                    throughput_best=ref / 4 * 0.9,
                    throughput_median=ref / 4 * 0.88,
                    latency_p99_ms=bs * 1.5,
                    card_throughput=ref * 0.9,
                ),
            )
        store.finish_run(key, "success")
    report = rw_client.get("/reid/api/report", params={"run": key}, headers=bearer(tokens["viewer"])).json()
    (group,) = report["perf_groups"]
    assert group["has_reference"] is True
    assert [(r["batch_size"], r["reference"]) for r in group["rows"]] == list(ASCEND_REFERENCE.items())
    assert all(r["vs_reference"] == pytest.approx(0.9) for r in group["rows"])
    html = rw_client.get("/reid/report", params={"run": key}, headers=bearer(tokens["viewer"])).text
    assert "Seed reference" in html and "1446.188" in html and "90 %" in html


def test_failures_and_demo_simulated_markers(rw_client, tokens, results_db):
    from reid_tasks.results import FailureRow, PerfRow, ResultsStore, RunInfo

    key = "demo-with-failure"
    with ResultsStore.open(results_db["url"]) as store:
        store.start_run(RunInfo(run_key=key, trigger="cli", kind="demo"))
        store.record_perf(
            key,
            PerfRow(
                target="ascend310",
                device_kind="Ascend310",
                batch_size=1,
                precision="fp16",
                mode="real",
                throughput_best=300.0,
                throughput_median=290.0,
                simulated=True,
            ),
        )
        store.record_failure(
            key,
            FailureRow(
                target="ascend310",
                batch_size=4,
                precision="fp16",
                stage="convert",
                message="atc exited with 1",
                log_tail="E19999: <inner error>",
            ),
        )
        store.finish_run(key, "failed")
    report = rw_client.get("/reid/api/report", params={"run": key}, headers=bearer(tokens["viewer"])).json()
    assert report["simulated"] is True and report["run"]["kind"] == "demo"
    assert [(f["batch_size"], f["stage"], f["message"]) for f in report["failures"]] == [
        (4, "convert", "atc exited with 1")
    ]
    html = rw_client.get("/reid/report", params={"run": key}, headers=bearer(tokens["viewer"])).text
    failures = html[html.index('id="failures"') : html.index('id="performance"')]
    assert "atc exited with 1" in failures and "E19999: &lt;inner error&gt;" in failures
    head = html[html.index('class="report-head"') : html.index('id="alerts"')]
    assert ">demo</span>" in head and ">simulated</span>" in head
    table = rw_client.get("/reid/", params={"target": "ascend310"}, headers=bearer(tokens["viewer"])).text
    assert ">demo</span>" in table and ">simulated</span>" in table
