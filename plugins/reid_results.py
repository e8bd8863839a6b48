"""Airflow plugin: the ReID validation results UI and API at ``/reid`` ("ReID validation" in the nav).

Loaded either from the ``airflow.plugins`` entry point (module ``plugins.reid_results``) or from
Airflow's plugins folder (module ``reid_results``, the folder on sys.path; plugins/.airflowignore keeps
Airflow from importing reid_ui/ file by file). The app itself lives in ``reid_ui`` and needs no Airflow
import; authentication goes through the running Airflow's auth manager.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

if __package__:  # plugins.reid_results (entry point)
    from .reid_ui import create_app
else:  # reid_results from the plugins folder
    from reid_ui import create_app  # type: ignore[no-redef]

URL_PREFIX = "/reid"

reid_app = create_app()


class ReidResultsPlugin(AirflowPlugin):
    """Results table, trend charts and alerts of the reid-validate DAG, plus a JSON/CSV API."""

    name = "reid_results"
    fastapi_apps = [  # noqa: RUF012 - AirflowPlugin's own attributes are class-level lists
        {"app": reid_app, "url_prefix": URL_PREFIX, "name": "ReID validation results"},
    ]
    external_views = [  # noqa: RUF012
        {
            "name": "ReID validation",
            "href": f"{URL_PREFIX}/",
            "url_route": "reid-validation",
            "destination": "nav",
            "category": "browse",
        },
    ]
