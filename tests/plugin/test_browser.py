"""End to end in Debian's headless Chromium: a real `airflow api-server` with the plugin (from the package's
entry point) and the simple auth manager; log in on Airflow's login page, open /reid/, check the table and the
SVG charts, and leave a screenshot in test-output/plugin/ (and the server log beside it).

Needs `apt-get install chromium` (/usr/bin/chromium) and the playwright Python package; no browser is
downloaded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from plugin_seed import DAG_ID, NIGHTS, seed
from plugin_support import CHROMIUM, CHROMIUM_ARGS, USERS, auth_env, free_port, wait_healthy, write_passwords

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "test-output" / "plugin"


@pytest.fixture
def airflow_server(tmp_path: Path):
    """`airflow api-server` on a free local port: temp AIRFLOW_HOME, SQLite, plugin from its entry point."""
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed: apt-get install -y chromium chromium-driver")
    home = tmp_path / "airflow"
    (home / "dags").mkdir(parents=True)
    results_url = f"sqlite:///{tmp_path / 'results.sqlite'}"
    seed(results_url)
    port = free_port()
    plugins_folder = tmp_path / "plugins"  # empty: the package's entry point registers the plugin
    plugins_folder.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "REID_"))}
    env.update(
        auth_env(write_passwords(tmp_path / "passwords.json")),
        AIRFLOW_HOME=str(home),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(plugins_folder),
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
        AIRFLOW__API__WORKERS="1",
        REID_RESULTS_DB_URL=results_url,
        REID_DATA_DIR=str(tmp_path / "data"),
    )
    airflow = [sys.executable, "-m", "airflow"]
    # cwd outside ROOT: `python -m` puts the cwd on sys.path, and an egg-info there is a second distribution.
    migrate = subprocess.run(
        [*airflow, "db", "migrate"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    OUTPUT.mkdir(parents=True, exist_ok=True)
    log = OUTPUT / "api-server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*airflow, "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc, log)
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def test_login_and_results_page_in_chromium(airflow_server: str):
    from playwright.sync_api import expect, sync_playwright

    base = airflow_server
    user, (_, password) = "editor", USERS["editor"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1300})
            # Not logged in: the plugin sends the browser to Airflow's login page.
            page.goto(f"{base}/reid/")
            assert "/auth/login" in page.url, page.url
            page.fill("input[name=username]", user)
            page.fill("input[name=password]", password)
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/reid/**", timeout=60_000)

            rows = page.locator("table#results tbody tr:not(.detail)")
            expect(rows).to_have_count(2 * NIGHTS + 1, timeout=30_000)
            # Default trend: the series with the longest history in the table.
            expect(page.locator("figure.chart svg.trend")).to_have_count(4, timeout=30_000)
            page.screenshot(path=str(OUTPUT / "reid-results-all.png"), full_page=True)
            run_link = page.locator(f'table#results a[href^="/dags/{DAG_ID}/runs/"]').first
            expect(run_link).to_be_visible()
            # The CLI openvino int8 run has perf only: two charts, two "no runs" notes.
            page.locator('table#results td a:text-is("openvino")').first.click()
            page.wait_for_url("**/reid/?*target=openvino*")
            expect(rows).to_have_count(1)
            expect(page.locator("figure.chart svg.trend")).to_have_count(2, timeout=30_000)
            expect(page.locator("figure.chart .chart-body").nth(2)).to_contain_text("No finished runs")

            # A row's target link opens that series: table filtered, four charts with history.
            page.goto(f"{base}/reid/")
            page.locator('table#results tr:has(td:text-is("16")) td a:text-is("onnxruntime")').first.click()
            page.wait_for_url("**/reid/?*batch_size=16*")
            expect(rows).to_have_count(NIGHTS)
            charts = page.locator("figure.chart svg.trend")
            expect(charts).to_have_count(4, timeout=30_000)
            assert page.locator("svg.trend[data-metric=throughput] .point").count() == NIGHTS
            assert page.locator("svg.trend[data-metric=throughput] .alert-marker").count() == 1
            assert page.locator("svg.trend .band").count() >= 3
            page.screenshot(path=str(OUTPUT / "reid-results.png"), full_page=True)

            # The plugin loaded cleanly, with the nav entry Airflow's UI builds from its external_views.
            errors = page.request.get(f"{base}/api/v2/plugins/importErrors").json()
            assert errors["total_entries"] == 0, errors
            plugins = page.request.get(f"{base}/api/v2/plugins").json()
            views = [v for p in plugins["plugins"] for v in p["external_views"]]
            assert {"name": "ReID validation", "href": "/reid/"}.items() <= next(
                v for v in views if v["name"] == "ReID validation"
            ).items()

            # Alerts page: acknowledge through the button (cookie + X-Requested-With).
            page.goto(f"{base}/reid/alerts")
            expect(page.locator("button.ack")).to_have_count(2)
            page.locator("button.ack").first.click()
            expect(page.locator("#ack-message")).to_contain_text("acknowledged", timeout=30_000)
            page.screenshot(path=str(OUTPUT / "reid-alerts.png"), full_page=True)

            # Inside Airflow's own UI, where the nav entry shows the page in an iframe.
            page.set_viewport_size({"width": 1440, "height": 900})
            page.goto(f"{base}/plugin/reid-validation")
            frame = page.frame_locator('iframe[src="/reid/"]')
            expect(frame.locator("table#results tbody tr").first).to_be_visible(timeout=60_000)
            wrap = frame.locator("#results").locator("xpath=..")
            assert wrap.evaluate("w => w.scrollWidth <= w.clientWidth"), "the results table scrolls sideways"
            # Hover a trend point: the tooltip names the run, its date and time, and the value.
            frame.locator("svg.trend[data-metric=throughput] .point").last.hover()
            tip = frame.locator(".chart-tip")
            expect(tip).to_be_visible()
            expect(tip).to_contain_text("2026-11-08 02:00 UTC")
            page.screenshot(path=str(OUTPUT / "reid-in-airflow.png"))
            # A run link opens the run in Airflow's own navigation (the iframe's sandbox blocks target=_top).
            frame.locator("table#results a.airflow-link").first.click()
            page.wait_for_url(f"{base}/dags/{DAG_ID}/runs/**", timeout=30_000)
            expect(page.locator('iframe[src="/reid/"]')).to_have_count(0)
        finally:
            browser.close()
