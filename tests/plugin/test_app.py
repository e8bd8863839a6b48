"""The /reid app through FastAPI's TestClient, authenticated with real JWTs of Airflow's simple auth manager."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from plugin_seed import CLI_RUN_KEY, DAG_ID, NIGHTS, run_id
from plugin_support import bearer

API_GETS = [
    "/reid/api/results",
    "/reid/api/results.csv",
    "/reid/api/alerts",
    "/reid/api/series?metric=throughput&target=onnxruntime&batch_size=16&precision=fp32",
]
PLUGIN_DIR = Path(__file__).resolve().parents[2] / "plugins"


# ---------------------------------------------------------------------------------------------- authentication
@pytest.mark.parametrize("path", API_GETS)
def test_api_without_token_is_401(client, path):
    r = client.get(path)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"


def test_ack_without_token_is_401(client):
    assert client.post("/reid/api/alerts/1/ack").status_code == 401


@pytest.mark.parametrize("path", ["/reid/", "/reid/alerts"])
def test_page_without_token_redirects_to_airflow_login(client, path):
    r = client.get(path + "?target=onnxruntime")
    assert r.status_code == 302
    location = r.headers["location"]
    assert location.startswith("/auth/login?next=")  # the simple auth manager's login page
    assert "http%3A%2F%2Ftestserver" + path.replace("/", "%2F") in location


def _forged(secret: str, **claims) -> str:
    now = datetime.now(UTC)
    body = {
        "sub": "admin",
        "role": "admin",
        "iat": now,
        "nbf": now,
        "exp": now + timedelta(hours=1),
        "aud": "apache-airflow",
        "jti": "x",
    }
    body.update(claims)
    return jwt.encode(body, secret, algorithm="HS512")


def test_token_signed_with_another_secret_is_rejected(client):
    # Airflow's core-API security: an invalid token is 403, a missing or expired one 401
    r = client.get("/reid/api/results", headers=bearer(_forged("not-the-secret-" + "0" * 64)))
    assert r.status_code == 403
    assert "Invalid JWT token" in r.json()["detail"]


def test_expired_token_is_rejected(client, auth_manager):
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    expired = auth_manager.generate_jwt(
        SimpleAuthManagerUser(username="admin", role="admin"), expiration_time_in_seconds=-120
    )
    r = client.get("/reid/api/results", headers=bearer(expired))
    assert r.status_code == 401


def test_unsigned_token_is_rejected(client):
    header = jwt.utils.base64url_encode(b'{"alg":"none","typ":"JWT"}').decode()
    payload = jwt.utils.base64url_encode(b'{"sub":"admin","role":"admin"}').decode()
    r = client.get("/reid/api/results", headers=bearer(f"{header}.{payload}."))
    assert r.status_code == 403


def test_token_is_not_accepted_in_the_query_string(client, tokens):
    assert client.get("/reid/api/results", params={"token": tokens["admin"]}).status_code == 401
    assert client.get("/reid/api/results", params={"_token": tokens["admin"]}).status_code == 401


def test_request_state_user_from_other_middleware_does_not_authenticate(auth_manager, seeded_db):
    """A middleware that sets request.state.user (as Airflow's own JWT middleware does) is not trusted."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from starlette.middleware.base import BaseHTTPMiddleware

    from plugins.reid_ui import create_app

    class Inject(BaseHTTPMiddleware):
        async def dispatch(self, request, call_next):
            request.state.user = object()
            return await call_next(request)

    app = create_app(db_url=seeded_db["url"])
    app.add_middleware(Inject)
    parent = FastAPI()
    parent.mount("/reid", app)
    with TestClient(parent, follow_redirects=False) as c:
        assert c.get("/reid/api/results").status_code == 401


def test_bearer_and_cookie_tokens_both_authenticate(client, tokens):
    assert client.get("/reid/api/results", headers=bearer(tokens["viewer"])).status_code == 200
    client.cookies.set("_token", tokens["viewer"])
    assert client.get("/reid/api/results").status_code == 200
    assert client.get("/reid/").status_code == 200


def test_bearer_wins_over_cookie(client, tokens):
    client.cookies.set("_token", tokens["viewer"])
    assert client.get("/reid/api/results", headers=bearer("garbage")).status_code == 403


# ---------------------------------------------------------------------------------------------- results
def test_results_newest_first_with_perf_and_accuracy_side_by_side(client, tokens, seeded_db):
    data = client.get("/reid/api/results", headers=bearer(tokens["viewer"])).json()
    rows = data["results"]
    assert data["count"] == len(rows) == seeded_db["rows"]
    starts = [r["started_at"] for r in rows]
    assert starts == sorted(starts, reverse=True)
    assert rows[0]["run_key"] == CLI_RUN_KEY and rows[0]["airflow_run"] is None
    last = next(r for r in rows if r["run_key"] == seeded_db["last_key"] and r["batch_size"] == 16)
    assert last["throughput_best"] == pytest.approx(320.0)
    assert last["rank1"] == pytest.approx(94.42) and last["mAP"] == pytest.approx(85.81)
    assert last["status"] == "regressed" and last["open_alerts"] == 2
    assert last["airflow_run"] == {
        "dag_id": DAG_ID,
        "run_id": run_id(NIGHTS - 1),
        "path": f"dags/{DAG_ID}/runs/scheduled__2026-11-08T02%3A00%3A00%2B00%3A00",
    }


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"target": "onnxruntime"}, 2 * NIGHTS),
        ({"target": "openvino"}, 1),
        ({"batch_size": 16}, NIGHTS),
        ({"precision": "int8"}, 1),
        ({"device_kind": "cpu", "batch_size": 1, "precision": "fp32"}, NIGHTS),
        ({"since": "2026-11-07"}, 2 * 2 + 1),
        ({"since": "2026-11-02", "until": "2026-11-03"}, 2 * 2),
        ({"until": "2026-11-01T23:00:00Z"}, 2),
        ({"target": "tensorrt"}, 0),
        ({"limit": 3}, 3),
    ],
)
def test_result_filters(client, tokens, params, expected):
    r = client.get("/reid/api/results", params=params, headers=bearer(tokens["viewer"]))
    assert r.status_code == 200, r.text
    rows = r.json()["results"]
    assert len(rows) == expected
    for key in ("target", "batch_size", "precision", "device_kind"):
        if key in params:
            assert {row[key] for row in rows} <= {params[key]}


@pytest.fixture
def store_calls(monkeypatch):
    """The keyword arguments of every ResultsStore.results call (which still runs)."""
    from reid_tasks.results import ResultsStore

    calls = []
    original = ResultsStore.results

    def spy(self, **kwargs):
        calls.append(kwargs)
        return original(self, **kwargs)

    monkeypatch.setattr(ResultsStore, "results", spy)
    return calls


def test_device_kind_and_until_are_filtered_by_the_store(client, tokens, store_calls):
    """The filters reach ResultsStore.results (SQL), which is asked for one row more than shown."""
    params = {"device_kind": "cpu", "until": "2026-11-03", "limit": 3}
    data = client.get("/reid/api/results", params=params, headers=bearer(tokens["viewer"])).json()
    assert store_calls == [
        {
            "target": None,
            "device_kind": "cpu",
            "batch_size": None,
            "precision": None,
            "since": None,
            "until": datetime(2026, 11, 3, 23, 59, 59, 999999, tzinfo=UTC),
            "run_key": None,
            "limit": 4,
        }
    ]
    assert data["count"] == 3 and data["truncated"] is True
    assert [r["started_at"][:10] for r in data["results"]] == ["2026-11-03", "2026-11-03", "2026-11-02"]
    assert data["filters"] == {"device_kind": "cpu", "until": "2026-11-03T23:59:59.999999+00:00", "limit": "3"}
    whole = client.get("/reid/api/results", params={"until": "2026-11-03"}, headers=bearer(tokens["viewer"])).json()
    assert whole["count"] == 6 and whole["truncated"] is False


@pytest.mark.parametrize(
    ("path", "limit"), [("/reid/", 200), ("/reid/api/results", 200), ("/reid/api/results.csv", 5000)]
)
def test_each_results_route_takes_the_filters_with_its_default_limit(client, tokens, store_calls, path, limit):
    params = {
        "target": "onnxruntime",
        "device_kind": "cpu",
        "batch_size": 16,
        "precision": "fp32",
        "since": "2026-11-02",
    }
    r = client.get(path, params=params, headers=bearer(tokens["viewer"]))
    assert r.status_code == 200, r.text
    assert store_calls == [
        {**params, "since": datetime(2026, 11, 2, tzinfo=UTC), "until": None, "run_key": None, "limit": limit + 1}
    ]


@pytest.mark.parametrize("path", ["/reid/api/results", "/reid/api/results.csv"])
def test_bad_filter_without_token_is_401_not_422(client, path):
    r = client.get(path, params={"since": "2026-11-05", "until": "2026-11-01"})
    assert r.status_code == 401


@pytest.mark.parametrize(
    ("params", "field", "reason"),
    [
        ({"batch_size": 0}, "batch_size", "greater than or equal to 1"),
        ({"batch_size": "sixteen"}, "batch_size", "valid integer"),
        ({"batch_size": 100000}, "batch_size", "less than or equal to 4096"),
        ({"precision": "fp32' OR '1'='1"}, "precision", "not a valid precision"),
        ({"target": "onnxruntime; DROP TABLE perf_results"}, "target", "not a valid target"),
        ({"target": "x" * 65}, "target", "at most 64 characters"),
        ({"since": "yesterday"}, "since", "not an ISO date"),
        ({"since": "2026-11-05", "until": "2026-11-01"}, "until", "before since"),
        ({"limit": 0}, "limit", "greater than or equal to 1"),
    ],
)
def test_bad_filters_are_422_with_the_reason(client, tokens, params, field, reason):
    for path in ("/reid/api/results", "/reid/api/results.csv"):
        r = client.get(path, params=params, headers=bearer(tokens["viewer"]))
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert any(d["loc"][-1] == field and reason in d["msg"] for d in detail), detail


def test_injection_attempt_leaves_the_data_intact(client, tokens):
    client.get("/reid/api/results", params={"target": "x' OR 1=1 --"}, headers=bearer(tokens["viewer"]))
    rows = client.get("/reid/api/results", headers=bearer(tokens["viewer"])).json()["results"]
    assert len(rows) > 0


def test_csv_matches_json(client, tokens):
    params = {"batch_size": 16}
    r = client.get("/reid/api/results.csv", params=params, headers=bearer(tokens["viewer"]))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    table = list(csv.reader(io.StringIO(r.text)))
    header, body = table[0], table[1:]
    assert header[:3] == ["Started (UTC)", "Run", "Status"] and "Throughput best (samples/s)" in header
    as_json = client.get("/reid/api/results", params=params, headers=bearer(tokens["viewer"])).json()["results"]
    assert len(body) == len(as_json) == NIGHTS
    col = header.index("Throughput best (samples/s)")
    assert [float(row[col]) for row in body] == pytest.approx([r["throughput_best"] for r in as_json])
    assert body[0][header.index("Airflow DAG")] == DAG_ID


def test_csv_neutralises_formulas():
    from plugins.reid_ui.queries import results_csv

    text = results_csv([{"run_key": '=HYPERLINK("http://x")', "target": "+1", "batch_size": 1}])
    row = list(csv.reader(io.StringIO(text)))[1]
    assert row[1].startswith("'=") and row[4] == "'+1"


# ---------------------------------------------------------------------------------------------- series
def test_series_has_baseline_band_and_alert_markers(client, tokens, seeded_db):
    q = {"metric": "throughput", "target": "onnxruntime", "batch_size": 16, "precision": "fp32"}
    data = client.get("/reid/api/series", params=q, headers=bearer(tokens["viewer"])).json()
    assert data["series_key"] == "onnxruntime/cpu/bs16/fp32/real"
    assert len(data["points"]) == NIGHTS
    assert data["points"][-1]["value"] == pytest.approx(320.0)
    assert data["points"][-1]["airflow_run"]["dag_id"] == DAG_ID
    assert data["baseline"] == pytest.approx(400.0, rel=0.01)
    lo, hi = data["band"]
    assert lo < data["baseline"] < hi and data["threshold"] == pytest.approx(lo)
    assert [a["run_key"] for a in data["alerts"]] == [seeded_db["last_key"]]
    assert data["alerts"][0]["metric"] == "throughput"


@pytest.mark.parametrize("metric", ["latency_p99", "rank1", "mAP"])
def test_every_chart_metric_has_a_series(client, tokens, metric):
    q = {"metric": metric, "target": "onnxruntime", "batch_size": 1, "precision": "fp32"}
    data = client.get("/reid/api/series", params=q, headers=bearer(tokens["viewer"])).json()
    assert data["metric"] == metric and len(data["points"]) == NIGHTS


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"metric": "fps", "target": "onnxruntime", "batch_size": 1, "precision": "fp32"}, "metric"),
        ({"metric": "rank1", "batch_size": 1, "precision": "fp32"}, "target"),
        ({"metric": "rank1", "target": "onnxruntime", "precision": "fp32"}, "batch_size"),
        ({"metric": "rank1", "target": "onnxruntime", "batch_size": 1, "precision": "fp32", "mode": "warp"}, "mode"),
        ({"target": "onnxruntime", "batch_size": 1, "precision": "fp32"}, "metric"),
    ],
)
def test_bad_series_selection_is_422(client, tokens, params, field):
    r = client.get("/reid/api/series", params=params, headers=bearer(tokens["viewer"]))
    assert r.status_code == 422
    assert any(d["loc"][-1] == field for d in r.json()["detail"]), r.json()


# ---------------------------------------------------------------------------------------------- alerts
def test_alerts_list_and_open_filter(client, tokens, seeded_db):
    data = client.get("/reid/api/alerts", params={"open": "true"}, headers=bearer(tokens["viewer"])).json()
    assert data["count"] == 2
    assert {a["metric"] for a in data["alerts"]} == {"throughput", "latency_p99"}
    a = data["alerts"][0]
    assert a["open"] and a["observed"] and a["baseline"] and a["threshold"]
    assert a["env_diff"] == {"environment.onnxruntime": ["1.32.0", "1.33.0"]}
    assert a["airflow_run"]["run_id"] == run_id(NIGHTS - 1)


def test_viewer_may_not_acknowledge(rw_client, tokens, results_db):
    alert_id = results_db["alerts"][0].id
    r = rw_client.post(f"/reid/api/alerts/{alert_id}/ack", headers=bearer(tokens["viewer"]))
    assert r.status_code == 403
    assert "may not edit runs of DAG reid_validation" in r.json()["detail"]
    still = rw_client.get("/reid/api/alerts", params={"open": "true"}, headers=bearer(tokens["viewer"])).json()
    assert still["count"] == 2


def test_editor_acknowledges_and_the_run_recovers(rw_client, tokens, results_db):
    for alert in results_db["alerts"]:
        r = rw_client.post(f"/reid/api/alerts/{alert.id}/ack", headers=bearer(tokens["editor"]))
        assert r.status_code == 200, r.text
        body = r.json()["alert"]
        assert body["acknowledged_by"] == "editor" and body["open"] is False
    again = rw_client.post(f"/reid/api/alerts/{results_db['alerts'][0].id}/ack", headers=bearer(tokens["admin"]))
    assert again.status_code == 200 and again.json()["alert"]["acknowledged_by"] == "editor"  # idempotent
    rows = rw_client.get("/reid/api/results", params={"batch_size": 16}, headers=bearer(tokens["viewer"])).json()
    assert rows["results"][0]["status"] == "success" and rows["results"][0]["open_alerts"] == 0


def test_cookie_ack_needs_the_csrf_header(rw_client, tokens, results_db):
    alert_id = results_db["alerts"][0].id
    rw_client.cookies.set("_token", tokens["editor"])
    r = rw_client.post(f"/reid/api/alerts/{alert_id}/ack")
    assert r.status_code == 403 and "X-Requested-With" in r.json()["detail"]
    r = rw_client.post(f"/reid/api/alerts/{alert_id}/ack", headers={"X-Requested-With": "XMLHttpRequest"})
    assert r.status_code == 200


@pytest.mark.parametrize(("alert_id", "code"), [(999999, 404), (0, 422), ("abc", 422)])
def test_ack_unknown_or_bad_id(rw_client, tokens, alert_id, code):
    assert rw_client.post(f"/reid/api/alerts/{alert_id}/ack", headers=bearer(tokens["editor"])).status_code == code


# ---------------------------------------------------------------------------------------------- queries
@pytest.fixture
def counted(auth_manager, seeded_db):
    """(client, selects): the app over the seeded database, and the SELECTs its store sends."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from sqlalchemy import event

    from plugins.reid_ui import create_app

    inner = create_app(db_url=seeded_db["url"])
    parent = FastAPI()
    parent.mount("/reid", inner)
    selects: list[str] = []

    def on_execute(_conn, _cursor, statement, *_args):
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    with TestClient(parent, follow_redirects=False) as c:
        engine = inner.state.store.get().engine
        event.listen(engine, "before_cursor_execute", on_execute)
        yield c, selects
        event.remove(engine, "before_cursor_execute", on_execute)


@pytest.mark.parametrize(
    ("path", "bound"),
    [
        ("/reid/api/results", 5),  # runs, perf, accuracy, open alert counts, failure rows
        ("/reid/api/results.csv", 5),
        ("/reid/", 5),
        ("/reid/api/alerts", 1),
        ("/reid/alerts", 1),
        # device kind, identity, points, good values, alert markers + accepted baselines and change points
        ("/reid/api/series?metric=throughput&target=onnxruntime&batch_size=16&precision=fp32", 7),
    ],
)
def test_a_request_costs_a_fixed_number_of_queries(counted, tokens, seeded_db, path, bound):
    """No query per row (e.g. one per run for its Airflow link): 1 row or all of them, same count."""
    c, selects = counted
    sep = "&" if "?" in path else "?"
    per_limit = {}
    for limit in (2, 1000):
        selects.clear()
        r = c.get(f"{path}{sep}limit={limit}", headers=bearer(tokens["viewer"]))
        assert r.status_code == 200, r.text
        per_limit[limit] = len(selects)
    assert per_limit[2] == per_limit[1000] <= bound, per_limit


def test_ack_costs_a_fixed_number_of_queries(rw_client, tokens, results_db):
    from sqlalchemy import event

    rw_client.get("/reid/api/alerts", headers=bearer(tokens["viewer"]))  # opens the store
    mounted_app = next(r.app for r in rw_client.app.routes if getattr(r, "path", "") == "/reid")
    engine = mounted_app.state.store.get().engine
    selects: list[str] = []

    def on_execute(_conn, _cursor, statement, *_args):
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        r = rw_client.post(f"/reid/api/alerts/{results_db['alerts'][0].id}/ack", headers=bearer(tokens["editor"]))
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
    assert r.status_code == 200
    assert r.json()["alert"]["airflow_run"]["run_id"] == run_id(NIGHTS - 1)
    assert len(selects) <= 5, selects  # the alert with its run; the ack (alert, run, open alerts, failure rows)


def test_database_error_is_503(rw_client, tokens, results_db):
    import sqlite3

    rw_client.get("/reid/api/alerts", headers=bearer(tokens["viewer"]))
    path = results_db["url"].removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE alerts RENAME TO alerts_gone")
    r = rw_client.get("/reid/api/alerts", headers=bearer(tokens["viewer"]))
    assert r.status_code == 503 and "results database error" in r.json()["detail"]
    assert rw_client.post("/reid/api/alerts/1/ack", headers=bearer(tokens["editor"])).status_code == 503


# ---------------------------------------------------------------------------------------------- pages
def test_results_page_renders_table_links_and_charts(client, tokens, seeded_db):
    r = client.get("/reid/", headers=bearer(tokens["viewer"]))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert html.count('<tr class="status-') == seeded_db["rows"]
    assert f'href="/dags/{DAG_ID}/runs/scheduled__2026-11-08T02%3A00%3A00%2B00%3A00" target="_top"' in html
    assert html.count('<figure class="chart"') == 4
    assert 'src="/reid/static/chart.js"' in html and 'href="/reid/static/reid.css"' in html
    assert "signed in as <strong>viewer</strong>" in html


def test_results_page_filters_and_reports_bad_input(client, tokens):
    ok = client.get("/reid/", params={"target": "openvino"}, headers=bearer(tokens["viewer"]))
    assert ok.text.count('<tr class="status-') == 1
    bad = client.get("/reid/", params={"since": "2026-11-05", "until": "2026-11-01"}, headers=bearer(tokens["viewer"]))
    assert bad.status_code == 422 and "before since" in bad.text


def test_empty_tables_say_so(rw_client, tokens, results_db):
    from reid_tasks.results import ResultsStore

    viewer = bearer(tokens["viewer"])
    none = rw_client.get("/reid/", params={"target": "tensorrt"}, headers=viewer).text
    assert '<p class="empty">No results match these filters.</p>' in none and '<table id="results"' not in none
    with ResultsStore.open(results_db["url"]) as store:
        for alert in store.alerts(open_only=True):
            store.ack(alert.id, by="test")
    open_ = rw_client.get("/reid/alerts", headers=viewer).text
    assert '<p class="empty">No open alerts.</p>' in open_ and '<table id="alerts"' not in open_
    every = rw_client.get("/reid/alerts", params={"show": "all"}, headers=viewer).text
    assert '<div class="table-wrap">\n<table id="alerts" class="results">' in every and 'class="empty"' not in every


def test_page_escapes_stored_text(rw_client, tokens, results_db):
    from reid_tasks.results import ResultsStore, RunInfo

    with ResultsStore.open(results_db["url"]) as store:
        store.start_run(RunInfo(run_key="<script>alert(1)</script>", trigger="cli"))
        from reid_tasks.results import PerfRow

        store.record_perf(
            "<script>alert(1)</script>",
            PerfRow(
                target="onnxruntime",
                device_kind="cpu",
                batch_size=1,
                precision="fp32",
                mode="real",
                throughput_best=1.0,
                throughput_median=1.0,
            ),
        )
        store.finish_run("<script>alert(1)</script>", "success")
    html = rw_client.get("/reid/", headers=bearer(tokens["viewer"])).text
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_alerts_page_offers_ack_only_to_editors(client, tokens):
    viewer = client.get("/reid/alerts", headers=bearer(tokens["viewer"])).text
    editor = client.get("/reid/alerts", headers=bearer(tokens["editor"])).text
    assert viewer.count('data-alert-id="') == 2 and 'class="ack"' not in viewer
    assert editor.count('class="ack"') == 2
    assert "1.32.0 → 1.33.0" in editor


def test_static_assets_are_served(client):
    for name, kind in (("chart.js", "javascript"), ("alerts.js", "javascript"), ("reid.css", "text/css")):
        r = client.get(f"/reid/static/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"]


def test_ui_loads_nothing_from_outside():
    """Air-gapped: templates and static files reference no external URL."""
    files = list((PLUGIN_DIR / "reid_ui" / "templates").glob("*.html")) + list(
        (PLUGIN_DIR / "reid_ui" / "static").glob("*")
    )
    assert len(files) >= 6
    external = re.compile(r"""(src|href)\s*=\s*["']?(https?:)?//|@import|url\(\s*["']?(https?:)?//""", re.I)
    for f in files:
        text = f.read_text(encoding="utf-8")
        assert not external.search(text), f"{f.name} references an external resource"
