"""The /reid app's security (issue 10): Airflow's own security dependency on every route, no OpenAPI schema,
no caching of data, injection strings in every API filter refused without a query error."""

from __future__ import annotations

import pytest
from plugin_support import bearer

#: every API filter of every GET endpoint, with its endpoint's other required params
FILTERS = {
    "/reid/api/results": ({}, ["target", "device_kind", "precision", "since", "until", "batch_size", "limit"]),
    "/reid/api/results.csv": ({}, ["target", "device_kind", "precision", "since", "until", "batch_size", "limit"]),
    "/reid/api/series": (
        {"metric": "throughput", "target": "onnxruntime", "batch_size": 16, "precision": "fp32"},
        ["metric", "target", "device_kind", "precision", "batch_size", "mode", "limit"],
    ),
    "/reid/api/alerts": ({}, ["since", "open", "limit"]),
    "/reid/api/report": ({}, ["run"]),
}
INJECTIONS = ["x' OR 1=1 --", "1; DROP TABLE perf_results", '" OR ""="', "1) UNION SELECT * FROM alerts --"]


def test_every_route_carries_airflow_security_dependency(auth_manager, seeded_db):
    from fastapi.routing import APIRoute

    from plugins.reid_ui import create_app

    app = create_app(db_url=seeded_db["url"])
    routes = [r for r in app.routes if isinstance(r, APIRoute)]
    assert routes
    for route in routes:
        calls = [d.call for d in route.dependant.dependencies]
        assert any(getattr(c, "__module__", "") == "airflow.api_fastapi.core_api.security" for c in calls), route.path
    # the only other route is the static assets mount (CSS/JS, no data)
    others = [getattr(r, "path", "") for r in app.routes if not isinstance(r, APIRoute)]
    assert others == ["/static"], others


def test_schema_and_docs_are_not_served(client, tokens):
    for path in ("/reid/openapi.json", "/reid/docs", "/reid/redoc"):
        assert client.get(path).status_code == 404, path
        assert client.get(path, headers=bearer(tokens["admin"])).status_code == 404, path


@pytest.mark.parametrize("path", [*FILTERS, "/reid/api/alerts/1/ack"])
def test_anonymous_is_refused_everywhere(client, path):
    r = client.post(path) if path.endswith("/ack") else client.get(path, params=FILTERS[path][0])
    assert r.status_code == 401, r.text
    assert r.headers["cache-control"] == "no-store"


def test_data_is_never_cached(client, tokens):
    for path, (params, _) in FILTERS.items():
        if path.endswith("report"):
            continue
        r = client.get(path, params=params, headers=bearer(tokens["viewer"]))
        assert r.status_code == 200, (path, r.text)
        assert r.headers["cache-control"] == "no-store", path
    client.cookies.set("_token", tokens["viewer"])
    for page in ("/reid/", "/reid/alerts"):
        r = client.get(page)
        assert r.status_code == 200 and r.headers["cache-control"] == "no-store", page


@pytest.mark.parametrize("path", list(FILTERS))
def test_injection_strings_in_every_filter_are_refused_without_a_query_error(client, tokens, path):
    base, names = FILTERS[path]
    before = client.get("/reid/api/results", headers=bearer(tokens["viewer"])).json()["count"]
    for name in names:
        for text in INJECTIONS:
            r = client.get(path, params={**base, name: text}, headers=bearer(tokens["viewer"]))
            # 422 with the field named; a run key is free text, so an unknown one is simply not found
            expected = 404 if name == "run" else 422
            assert r.status_code == expected, (path, name, text, r.status_code, r.text[:300])
            assert not any(w in r.text.lower() for w in ("syntax", "sqlite", "psycopg", "operational")), r.text[:300]
            if expected == 422:
                assert any(d["loc"][-1] == name for d in r.json()["detail"]), r.text[:300]
    assert client.get("/reid/api/results", headers=bearer(tokens["viewer"])).json()["count"] == before
