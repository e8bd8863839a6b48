"""The /reid results UI and API (FastAPI app, Jinja2 templates, static CSS/JS) behind Airflow's own security."""

from __future__ import annotations

from .app import create_app
from .auth import AirflowAuth, AuthBackend

__all__ = ["AirflowAuth", "AuthBackend", "create_app"]
