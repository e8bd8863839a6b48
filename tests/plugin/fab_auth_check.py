"""Run by test_fab_auth.py in a subprocess whose environment selects the FAB auth manager over a migrated
SQLite metadata DB with users ``viewer`` (role Viewer) and ``operator`` (role User): mounts the /reid app the
way the api-server does (the auth manager's own app at /auth), logs in through FAB's ``/auth/token`` and prints
one JSON line of what each caller got. Argument: the results database URL (seeded here)."""

from __future__ import annotations

import json
import sys

from fastapi import FastAPI
from fastapi.testclient import TestClient


def main() -> int:
    from airflow.api_fastapi.app import init_auth_manager
    from plugin_seed import seed

    from plugins.reid_ui import create_app

    url = sys.argv[1]
    alerts = seed(url)["alerts"]
    parent = FastAPI()
    manager = init_auth_manager(parent)  # mounts FAB's login/token app at /auth, as the api-server does
    parent.mount("/reid", create_app(db_url=url))
    out: dict = {"auth_manager": type(manager).__name__}
    with TestClient(parent, follow_redirects=False) as c:
        tokens = {}
        for user, password in (("viewer", "viewer-pw-1"), ("operator", "operator-pw-2")):
            r = c.post("/auth/token", json={"username": user, "password": password})
            out[f"login_{user}"] = r.status_code
            tokens[user] = r.json().get("access_token", "")
        wrong = c.post("/auth/token", json={"username": "viewer", "password": "nope"})
        out["login_wrong_password"] = wrong.status_code

        def get(path: str, token: str | None = None):
            return c.get(path, headers={"Authorization": f"Bearer {token}"} if token else {})

        out["anonymous_api"] = get("/reid/api/results").status_code
        out["anonymous_page"] = [get("/reid/").status_code, get("/reid/").headers.get("location", "")]
        out["anonymous_ack"] = c.post(f"/reid/api/alerts/{alerts[0].id}/ack").status_code
        r = get("/reid/api/results", tokens["viewer"])
        out["viewer_read"] = [r.status_code, r.json().get("count") if r.status_code == 200 else None]
        out["viewer_page"] = get("/reid/alerts", tokens["viewer"]).status_code
        ack = {"Authorization": f"Bearer {tokens['viewer']}"}
        r = c.post(f"/reid/api/alerts/{alerts[0].id}/ack", headers=ack)
        out["viewer_ack"] = [r.status_code, r.json().get("detail")]
        out["open_after_viewer"] = get("/reid/api/alerts?open=true", tokens["viewer"]).json()["count"]
        ack = {"Authorization": f"Bearer {tokens['operator']}"}
        r = c.post(f"/reid/api/alerts/{alerts[0].id}/ack", headers=ack)
        out["operator_ack"] = [r.status_code, (r.json().get("alert") or {}).get("acknowledged_by")]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
