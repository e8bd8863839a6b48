"""A new user's journey in Debian's Chromium against `make airflow` (scripts/airflow_standalone.sh: airflow
standalone with the LocalExecutor, SQLite), on a small demo deployment configuration ($REID_CONFIG_FILE):

log in -> open the DAG -> trigger it from the form with its defaults -> wait for the run's success -> open
"ReID validation" from Airflow's nav -> find the run's rows -> open its report -> follow the link to the
Airflow run -> its "ReID report" tab; screenshots at 1440x900 in test-output/journey/. Then two triggers through
the REST API that reach past the run settings are refused, and TERM stops the script with every process
Airflow started.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest
from plugin_support import CHROMIUM, CHROMIUM_ARGS, USERS, auth_env, free_port, wait_healthy, write_passwords

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1500)]

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "test-output" / "journey"
DAG_ID = "reid_validation"
VIEWPORT = {"width": 1440, "height": 900}
RUN_TIMEOUT_S = 900
# A deployment's small demo configuration: demo runs allowed, two batch sizes, one timed repetition, a small
# parity sample (reid_tasks/configs/demo_deployment.yml, made smaller).
DEMO_CONFIG = """\
VALIDATION:
  DEMO: True
  TARGETS: [onnxruntime]
  BATCH_SIZES: [1, 4]
  PRECISIONS: [fp32]
  BENCH:
    WARMUP: 1
    REPEATS: 1
    PURE_BATCHES: 2
  PARITY:
    SAMPLE: 32
"""


def _descendants(pid: int) -> set[int]:
    """Processes below ``pid`` (from /proc, any session)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def standalone(tmp_path: Path):
    """`scripts/airflow_standalone.sh` on a free port with a temp AIRFLOW_HOME and data directory."""
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed: apt-get install -y chromium chromium-driver")
    OUTPUT.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = tmp_path / "deployment.yml"
    config.write_text(DEMO_CONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "REID_"))}
    env.update(
        auth_env(write_passwords(tmp_path / "passwords.json")),
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API__BASE_URL=base,
        REID_DATA_DIR=str(tmp_path / "data"),
        REID_CONFIG_FILE=str(config),
        REID_SCHEDULE="none",
        REID_STOP_TIMEOUT_S="60",
    )
    log = OUTPUT / "airflow-standalone.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            ["bash", str(ROOT / "scripts" / "airflow_standalone.sh")],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    state = {"base": base, "proc": proc, "log": log, "stopped": False}
    try:
        wait_healthy(base, proc, log, timeout=300)
        yield state
    finally:
        if proc.poll() is None:  # the test failed before its own stop: clean up
            leftover = _descendants(proc.pid)
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            for pid in leftover:
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)


def _api(base: str, token: str, path: str) -> dict:
    req = urllib.request.Request(f"{base}{path}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def _post(base: str, token: str, path: str, body: dict) -> tuple[int, dict]:
    """(status, JSON body) of a POST to Airflow's REST API; an HTTP error is returned, not raised."""
    req = urllib.request.Request(
        f"{base}{path}",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _token(base: str, user: str, password: str) -> str:
    body = json.dumps({"username": user, "password": password}).encode()
    req = urllib.request.Request(f"{base}/auth/token", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)["access_token"]


#: true once every finite animation on the page has ended (spinners loop forever and are ignored)
FINITE_ANIMATIONS_DONE = (
    "() => document.getAnimations().every("
    "(a) => a.playState !== 'running' || a.effect?.getComputedTiming().iterations === Infinity)"
)


def _wait_for_run(base: str, token: str, run_id: str | None = None) -> dict:
    """The newest run (or ``run_id``) once it has finished."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        if run_id is None:
            runs = _api(base, token, f"/api/v2/dags/{DAG_ID}/dagRuns?order_by=-start_date&limit=5")["dag_runs"]
        else:
            runs = [_api(base, token, f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}")]
        if runs and runs[0]["state"] in ("success", "failed"):
            return runs[0]
        time.sleep(5)
    raise AssertionError(f"the run did not finish within {RUN_TIMEOUT_S}s")


def _task_log(base: str, token: str, run_id: str, task_id: str) -> str:
    """The text of a task's first try, as Airflow's REST API serves it."""
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/logs/1?full_content=true"
    return json.dumps(_api(base, token, path))


def _rest_api_triggers_stay_inside_the_run_settings(base: str, token: str) -> None:
    """Through Airflow's REST API, as a script or another system triggers: a conf key that is a deployment setting
    reaches the DAG and is refused by its first task (nothing else runs); an override outside the allow-list is
    refused by Airflow itself, against the form's schema, before a run exists."""
    path = f"/api/v2/dags/{DAG_ID}/dagRuns"
    status, body = _post(base, token, path, {"logical_date": None, "conf": {"trust_checkpoint": True}})
    assert status in (200, 201), (status, body)
    run = _wait_for_run(base, token, body["dag_run_id"])
    assert run["state"] == "failed", run
    tis = _api(base, token, f"{path}/{quote(run['dag_run_id'], safe='')}/taskInstances?limit=100")["task_instances"]
    states = {t["task_id"]: t["state"] for t in tis}
    assert states["prepare_run"] == "failed", states
    # nothing ran past the refusal ("finish" runs on all_done, and with no prepared run it has nothing to mark)
    ran = {t: state for t, state in states.items() if t not in ("prepare_run", "finish")}
    assert ran and set(ran.values()) <= {"upstream_failed", "skipped"}, states
    log_text = _task_log(base, token, run["dag_run_id"], "prepare_run")
    assert "trigger refused" in log_text and "trust_checkpoint" in log_text, log_text[-2000:]
    assert "VALIDATION.TRUST_CHECKPOINT" in log_text, log_text[-2000:]  # names where the setting belongs

    overrides = {"config_overrides": "VALIDATION.RESULTS_DB_URL sqlite:////tmp/elsewhere.db"}
    status, body = _post(base, token, path, {"logical_date": None, "conf": overrides})
    assert status == 400, (status, body)
    assert "config_overrides" in json.dumps(body), body


def _failed_tasks(base: str, token: str, run_id: str) -> list[str]:
    tis = _api(base, token, f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances?limit=100")
    return [f"{t['task_id']}[{t['map_index']}]: {t['state']}" for t in tis["task_instances"] if t["state"] != "success"]


def test_trigger_with_defaults_and_follow_the_results(standalone):
    from playwright.sync_api import expect, sync_playwright

    base = standalone["base"]
    user, (_, password) = "editor", USERS["editor"]
    shot = lambda page, name: page.screenshot(path=str(OUTPUT / f"{name}.png"))  # noqa: E731
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(60_000)
            expect.set_options(timeout=60_000)
            # Log in.
            page.goto(f"{base}/")
            page.wait_for_url("**/auth/login**")
            page.fill("input[name=username]", user)
            page.fill("input[name=password]", password)
            page.click("button[type=submit]")
            page.wait_for_url(lambda url: "/auth/login" not in url)

            # Open the DAG from the Dags list (it appears once the dag processor has parsed it).
            deadline = time.monotonic() + 240
            while True:
                page.goto(f"{base}/dags")
                link = page.get_by_role("link", name=DAG_ID, exact=True)
                try:
                    expect(link.first).to_be_visible(timeout=10_000)
                    break
                except AssertionError:
                    assert time.monotonic() < deadline, "the DAG never appeared in the Dags list"
            link.first.click()
            page.wait_for_url(re.compile(rf"/dags/{DAG_ID}/?$"))
            trigger = page.get_by_role("button", name="Trigger Dag").first
            expect(trigger).to_be_visible()
            page.wait_for_timeout(1500)  # let the DAG page finish drawing before the screenshot
            shot(page, "01-dag")

            # Trigger from the form, changing nothing ("Unpause on trigger" is ticked by default).
            trigger.click()
            dialog = page.get_by_role("dialog")
            expect(dialog.get_by_text("Run Parameters")).to_be_visible()
            submit = dialog.get_by_role("button", name="Trigger", exact=True)
            expect(submit).to_be_enabled()
            # the dialog fades in over the DAG page: a screenshot before its animations end shows both
            page.wait_for_function(FINITE_ANIMATIONS_DONE)
            shot(page, "02-trigger-form")
            submit.click()
            page.wait_for_url(f"**/dags/{DAG_ID}/runs/**")

            token = _token(base, user, password)
            run = _wait_for_run(base, token)
            run_id = run["dag_run_id"]
            assert run["state"] == "success", _failed_tasks(base, token, run_id)
            page.goto(f"{base}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}")
            expect(page.get_by_text("Success").first).to_be_visible()
            shot(page, "03-run-success")

            # "ReID validation" from Airflow's nav (Browse menu): the page in Airflow's iframe.
            page.get_by_role("button", name="Browse").click()
            page.get_by_role("menuitem", name="ReID validation").click()
            page.wait_for_url("**/plugin/reid-validation**")
            frame = page.frame_locator('iframe[title="ReID validation"]')
            rows = frame.locator(f'table#results tbody tr[data-run-key="{DAG_ID}/{run_id}"]')
            expect(rows).to_have_count(2)  # batch 1 and 4
            expect(rows.first.locator(".badge.marker")).to_have_text("demo")  # synthetic set + demo checkpoint
            expect(frame.locator("figure.chart svg.trend").first).to_be_visible()
            wrap = frame.locator("#results").locator("xpath=..")
            assert wrap.evaluate("w => w.scrollWidth <= w.clientWidth"), "the results table scrolls sideways"
            assert frame.locator("html").evaluate("h => h.scrollWidth <= h.clientWidth"), "the page scrolls sideways"
            shot(page, "04-results")

            # The run's report, from its row.
            rows.first.locator("a.report-link").click()
            expect(frame.locator("#performance h3")).to_contain_text("onnxruntime")
            expect(frame.locator("#performance table tbody tr")).to_have_count(2)
            expect(frame.locator("figure.batch-chart svg")).to_have_count(2)
            expect(frame.locator("#accuracy table tbody tr")).to_have_count(2)
            shot(page, "05-report")

            # The run link opens the Airflow run inside Airflow's navigation, whose run page has the report tab.
            frame.locator("#airflow-run-link").click()
            page.wait_for_url(f"**/dags/{DAG_ID}/runs/{quote(run_id, safe='')}**")
            shot(page, "06-airflow-run")
            page.get_by_text("ReID report", exact=True).click()
            tab = page.frame_locator('iframe[title="ReID report"]')
            expect(tab.locator("#performance table tbody tr")).to_have_count(2)
            shot(page, "07-run-report-tab")

            _rest_api_triggers_stay_inside_the_run_settings(base, token)
        finally:
            expect.set_options(timeout=5_000)  # Playwright's default, for the tests after this one
            browser.close()

    # `make airflow` stops cleanly: TERM reaches every process Airflow started.
    proc = standalone["proc"]
    started = _descendants(proc.pid)
    assert len(started) >= 4, started  # scheduler, dag processor, triggerer, api-server, executor workers
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    time.sleep(1)
    assert [pid for pid in started if _alive(pid)] == []
