"""Airflow plugin: the ReID validation pages and API at ``/reid`` ("ReID validation" in the nav).

Registered in one way only: the installed package's ``airflow.plugins`` entry point
(``reid_results = plugins.reid_results:ReidResultsPlugin`` in setup.cfg). Airflow's plugins folder must
not hold it too (Airflow would report "Plugin 'reid_results' already registered"); plugins/.airflowignore
keeps this folder inert should a plugins folder point here. The app itself lives in ``reid_ui`` and needs
no Airflow import; authentication goes through the running Airflow's auth manager.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from .reid_ui import create_app

URL_PREFIX = "/reid"

reid_app = create_app()


class ReidResultsPlugin(AirflowPlugin):
    """Results table, run reports, trend charts and alerts of the reid-validate DAG, plus a JSON/CSV API."""

    name = "reid_results"
    fastapi_apps = [  # noqa: RUF012 - AirflowPlugin's own attributes are class-level lists
        {"app": reid_app, "url_prefix": URL_PREFIX, "name": "ReID validation"},
    ]
    external_views = [  # noqa: RUF012
        {
            "name": "ReID validation",
            "href": f"{URL_PREFIX}/",
            "url_route": "reid-validation",
            "destination": "nav",
            "category": "browse",
        },
        {  # a tab on every DAG run's page: the run report (Airflow fills in the ids)
            "name": "ReID report",
            "href": URL_PREFIX + "/runs/{DAG_ID}/{RUN_ID}",
            "url_route": "reid-report",
            "destination": "dag_run",
        },
    ]
