"""Authentication and authorisation of the /reid pages and API: Airflow's own FastAPI security dependencies.

``create_app`` attaches :func:`app_dependencies` to the whole app, so no route escapes them:

- every route needs a user allowed to see the Airflow UI: ``requires_access_view(AccessView.WEBSITE)`` from
  ``airflow.api_fastapi.core_api.security``, the dependency Airflow's core API uses. It takes the JWT from
  ``Authorization: Bearer`` (preferred) or the UI's ``_token`` cookie and has the configured auth manager
  validate it (signature, expiry, revocation); a user set on ``request.state`` by other middleware is not
  trusted. No token or an expired one: 401; an invalid token or a user without the view: 403. HTML pages
  answer 401 with a redirect to the auth manager's login page instead.
- acknowledging an alert needs permission to edit runs of the alert's DAG (the auth manager's
  ``is_authorized_dag(method="PUT", access_entity=DagAccessEntity.RUN)``, what ``requires_access_dag`` checks),
  and a cookie-authenticated POST must carry ``X-Requested-With: XMLHttpRequest`` (a cross-site form cannot set
  it), so the ack endpoint cannot be driven by CSRF.
- the OpenAPI schema and docs are not served; data responses carry ``Cache-Control: no-store``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import Depends, HTTPException, Request, status

log = logging.getLogger(__name__)

CSRF_HEADER = "X-Requested-With"
CSRF_VALUE = "XMLHttpRequest"


class AuthBackend(Protocol):
    """What the app asks the auth manager beyond authentication (``AirflowAuth``)."""

    def may_edit_runs(self, user: Any, dag_id: str | None) -> bool: ...

    def login_url(self, next_url: str) -> str: ...


class AirflowAuth:
    """``AuthBackend`` over the auth manager of the running Airflow API server."""

    @staticmethod
    def _manager() -> Any:
        from airflow.api_fastapi.app import get_auth_manager

        return get_auth_manager()

    def may_edit_runs(self, user: Any, dag_id: str | None) -> bool:
        from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

        return bool(
            self._manager().is_authorized_dag(
                method="PUT",
                access_entity=DagAccessEntity.RUN,
                details=DagDetails(id=dag_id) if dag_id else None,
                user=user,
            )
        )

    def login_url(self, next_url: str) -> str:
        return str(self._manager().get_url_login(next_url=next_url))


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: the auth manager's user and where its token came from."""

    user: Any
    via: str  # "bearer" | "cookie"

    @property
    def name(self) -> str:
        for attr in ("get_name", "get_id"):
            fn = getattr(self.user, attr, None)
            if callable(fn):
                value = fn()
                if value:
                    return str(value)
        return "unknown"


def app_dependencies() -> list[Any]:
    """Airflow's core-API security dependency for the whole app: an authenticated user with the UI view."""
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import requires_access_view

    return [Depends(requires_access_view(AccessView.WEBSITE))]


def principal_dependency() -> Any:
    """A dependency giving the route its ``Principal``; it shares Airflow's ``get_user`` with the app-level
    check (FastAPI resolves it once per request)."""
    from airflow.api_fastapi.core_api.security import get_user

    async def principal(request: Request, user: Any = Depends(get_user)) -> Principal:  # noqa: B008
        from fastapi.security.utils import get_authorization_scheme_param

        scheme, credentials = get_authorization_scheme_param(request.headers.get("authorization"))
        bearer = scheme.lower() == "bearer" and bool(credentials)  # as HTTPBearer, which get_user prefers
        return Principal(user=user, via="bearer" if bearer else "cookie")

    return principal


def check_csrf(request: Request, principal: Principal) -> None:
    """Cookie-authenticated state changes need the ``X-Requested-With: XMLHttpRequest`` header."""
    if principal.via == "cookie" and request.headers.get(CSRF_HEADER) != CSRF_VALUE:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"cookie-authenticated POST needs the header {CSRF_HEADER}: {CSRF_VALUE}",
        )
