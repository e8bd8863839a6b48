"""Authentication and authorisation of the /reid pages and API, through Airflow's auth manager.

The JWT comes from the ``Authorization: Bearer`` header or, for the browser, from the ``_token`` cookie
the Airflow UI sets at login; nothing else (query strings, ``request.state``) is trusted. The token is
validated by the configured auth manager (``get_user_from_token``: signature, expiry, revocation).

- read (every page and GET endpoint): an authenticated user allowed to see the Airflow UI
  (``is_authorized_view(AccessView.WEBSITE)``);
- acknowledge an alert: a user who may edit runs of the alert's DAG
  (``is_authorized_dag(method="PUT", access_entity=DagAccessEntity.RUN)``);
- a cookie-authenticated POST must carry ``X-Requested-With: XMLHttpRequest`` (a cross-site form
  cannot set it), so the ack endpoint cannot be driven by CSRF.

Unauthenticated: 401 for the API, a redirect to the auth manager's login page for HTML pages.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import HTTPException, Request, status

log = logging.getLogger(__name__)

COOKIE_NAME = "_token"  # airflow.api_fastapi.auth.managers.base_auth_manager.COOKIE_NAME_JWT_TOKEN
CSRF_HEADER = "X-Requested-With"
CSRF_VALUE = "XMLHttpRequest"


class NotAuthenticated(Exception):
    """No token, or a token the auth manager rejects."""


class LoginRequired(Exception):
    """An HTML page was requested without a valid token: redirect to ``login_url``."""

    def __init__(self, login_url: str) -> None:
        super().__init__(login_url)
        self.login_url = login_url


class AuthBackend(Protocol):
    """What the app needs from an auth manager (``AirflowAuth`` in production and in tests)."""

    async def user_from_token(self, token: str) -> Any: ...

    def may_read(self, user: Any) -> bool: ...

    def may_edit_runs(self, user: Any, dag_id: str | None) -> bool: ...

    def login_url(self, next_url: str) -> str: ...


class AirflowAuth:
    """``AuthBackend`` over the auth manager of the running Airflow API server."""

    @staticmethod
    def _manager() -> Any:
        from airflow.api_fastapi.app import get_auth_manager

        return get_auth_manager()

    async def user_from_token(self, token: str) -> Any:
        from jwt import InvalidTokenError

        try:
            return await self._manager().get_user_from_token(token)
        except InvalidTokenError as exc:  # ExpiredSignatureError is a subclass
            raise NotAuthenticated(f"invalid token: {exc}") from exc

    def may_read(self, user: Any) -> bool:
        from airflow.api_fastapi.auth.managers.models.resource_details import AccessView

        return bool(self._manager().is_authorized_view(access_view=AccessView.WEBSITE, user=user))

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


def request_token(request: Request) -> tuple[str, str] | None:
    """(token, "bearer"|"cookie") from the Authorization header (preferred) or the ``_token`` cookie."""
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip(), "bearer"
    cookie = request.cookies.get(COOKIE_NAME)
    if cookie:
        return cookie, "cookie"
    return None


async def authenticate(request: Request, backend: AuthBackend) -> Principal:
    """The caller, or ``NotAuthenticated``; 403 when authenticated but not allowed to read."""
    found = request_token(request)
    if found is None:
        raise NotAuthenticated("no token: send 'Authorization: Bearer <JWT>' or log in to Airflow")
    token, via = found
    user = await backend.user_from_token(token)
    if not backend.may_read(user):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this user may not view the Airflow UI")
    return Principal(user=user, via=via)


def check_csrf(request: Request, principal: Principal) -> None:
    """Cookie-authenticated state changes need the ``X-Requested-With: XMLHttpRequest`` header."""
    if principal.via == "cookie" and request.headers.get(CSRF_HEADER) != CSRF_VALUE:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"cookie-authenticated POST needs the header {CSRF_HEADER}: {CSRF_VALUE}",
        )
