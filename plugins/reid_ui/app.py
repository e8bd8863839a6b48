"""The FastAPI app Airflow mounts at ``/reid``: results table, trend charts, alerts, JSON/CSV API.

``create_app()`` attaches Airflow's own security dependencies to the whole app (see ``auth``; tests build it
with a real auth manager, see tests/plugin); ``plugins/reid_results.py`` wires it into Airflow's plugin system.
"""

import logging
import os
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path as FsPath
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from reid_tasks.errors import ResultsError, ResultsNotFound
from reid_tasks.results import ResultsStore, RuleConfig, resolve_url

from . import queries
from .auth import AirflowAuth, AuthBackend, Principal, app_dependencies, check_csrf, principal_dependency
from .filters import (
    DEFAULT_LIMIT,
    MAX_BATCH,
    MAX_LIMIT,
    METRICS,
    FilterError,
    ResultFilters,
    SeriesSelector,
    parse_when,
)

log = logging.getLogger(__name__)

HERE = FsPath(__file__).resolve().parent
MOUNT_PREFIX = "/reid"
CHART_METRICS = (
    ("throughput", "Throughput (samples/s)"),
    ("latency_p99", "Latency p99 (ms)"),
    ("rank1", "Rank-1 (%)"),
    ("mAP", "mAP (%)"),
)

# Query parameter types shared by the pages and the API (FastAPI validates type and range: 422).
Name = Annotated[str | None, Query(max_length=64)]
Precision = Annotated[str | None, Query(max_length=16)]
BatchSize = Annotated[int | None, Query(ge=1, le=MAX_BATCH)]
When = Annotated[str | None, Query(max_length=40, description="ISO date (2024-05-31) or datetime")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]


def filter_params(default_limit: int) -> Callable[..., dict[str, Any]]:
    """A dependency: the results filters' query parameters as given (FastAPI checks types and ranges: 422),
    ``limit`` defaulting to ``default_limit``; ``ResultFilters.parse(**them)`` does the rest."""

    def params(
        target: Name = None,
        device_kind: Name = None,
        batch_size: BatchSize = None,
        precision: Precision = None,
        since: When = None,
        until: When = None,
        limit: Limit = default_limit,
    ) -> dict[str, Any]:
        return {
            "target": target,
            "device_kind": device_kind,
            "batch_size": batch_size,
            "precision": precision,
            "since": since,
            "until": until,
            "limit": limit,
        }

    return params


def result_filters(default_limit: int) -> Callable[..., ResultFilters]:
    """A dependency: the results filters parsed (a bad one raises FilterError, answered 422 with the reason)."""
    given = filter_params(default_limit)

    def parsed(params: Annotated[dict[str, Any], Depends(given)]) -> ResultFilters:
        return ResultFilters.parse(**params)

    return parsed


FilterParams = Annotated[dict[str, Any], Depends(filter_params(DEFAULT_LIMIT))]
Filters = Annotated[ResultFilters, Depends(result_filters(DEFAULT_LIMIT))]
CsvFilters = Annotated[ResultFilters, Depends(result_filters(MAX_LIMIT))]  # the export: every row by default


class StoreHolder:
    """One ResultsStore (one connection pool) per app, opened on first use so Airflow starts even when
    the results database is down; a failed open is retried on the next request.

    The URL: the explicit one, else ``resolve_url(airflow=True)``: ``$REID_RESULTS_DB_URL`` > the Airflow
    connection ``reid_results_db`` (the api-server is no task, so it is looked up through Airflow's secrets
    backends, metastore included) > SQLite under the data directory."""

    def __init__(self, url: str | None) -> None:
        self._url = url
        self._store: ResultsStore | None = None
        self._lock = threading.Lock()

    def get(self) -> ResultsStore:
        with self._lock:
            if self._store is None:
                self._store = ResultsStore.open(resolve_url(self._url, airflow=True))
            return self._store

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None


def deployment_rules() -> RuleConfig:
    """The rule settings of the deployment's config (``$REID_CONFIG_FILE`` over the defaults): the reference
    figures run reports show beside the matching rows are the ones the reference rule compares with."""
    from reid_tasks.config import load_config

    return RuleConfig.from_cfg(load_config(os.environ.get("REID_CONFIG_FILE") or None))


def create_app(
    *,
    db_url: str | None = None,
    auth: AuthBackend | None = None,
    rules: RuleConfig | None = None,
) -> FastAPI:
    """The /reid app. ``db_url``: results database (None: see ``StoreHolder``); ``auth``: defaults to the
    running Airflow's auth manager; ``rules``: whose reference figures run reports show (None:
    ``deployment_rules()``, read on first use)."""
    holder = StoreHolder(db_url)
    loaded: list[RuleConfig] = [] if rules is None else [rules]

    def rule_config() -> RuleConfig:
        if not loaded:
            loaded.append(deployment_rules())
        return loaded[0]

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        holder.close()

    app = FastAPI(
        title="ReID validation",
        description="Results history of the reid-validate DAG: performance, accuracy, regression alerts.",
        lifespan=lifespan,
        openapi_url=None,  # schema and docs are not served
        docs_url=None,
        redoc_url=None,
        dependencies=app_dependencies(),  # Airflow's authentication + UI view, on every route
    )
    app.state.auth = auth if auth is not None else AirflowAuth()
    app.state.store = holder
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    # ------------------------------------------------------------------ dependencies
    current_principal = principal_dependency()

    def store() -> ResultsStore:
        try:
            return holder.get()
        except ResultsError as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"results database unavailable: {exc}") from exc

    ApiUser = Annotated[Principal, Depends(current_principal)]
    PageUser = ApiUser
    Store = Annotated[ResultsStore, Depends(store)]

    @app.exception_handler(HTTPException)
    async def _unauthenticated_page(request: Request, exc: HTTPException) -> Response:
        """A page asked without a valid login goes to the auth manager's login page; the API answers 401."""
        api = request.url.path.startswith(f"{request.scope.get('root_path', '')}/api/")
        if exc.status_code == status.HTTP_401_UNAUTHORIZED and request.method == "GET" and not api:
            login = request.app.state.auth.login_url(str(request.url))
            return RedirectResponse(login, status_code=status.HTTP_302_FOUND)
        if exc.status_code == status.HTTP_401_UNAUTHORIZED and not exc.headers:
            exc = HTTPException(exc.status_code, exc.detail, headers={"WWW-Authenticate": "Bearer"})
        return await http_exception_handler(request, exc)

    @app.middleware("http")
    async def _no_store(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        if not request.url.path.startswith(f"{request.scope.get('root_path', '')}/static/"):
            response.headers["Cache-Control"] = "no-store"  # results are per-user data: keep them out of caches
        return response

    @app.exception_handler(FilterError)
    async def _bad_filter(_request: Request, exc: FilterError) -> Response:
        return JSONResponse({"detail": exc.detail()}, status_code=422)

    @app.exception_handler(ResultsNotFound)
    async def _not_found(_request: Request, exc: ResultsNotFound) -> Response:
        return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_404_NOT_FOUND)

    @app.exception_handler(ResultsError)
    async def _db_error(_request: Request, exc: ResultsError) -> Response:
        log.warning("results database error: %s", exc)
        return JSONResponse({"detail": f"results database error: {exc}"}, status_code=503)

    def page_context(request: Request, principal: Principal, **extra: Any) -> dict[str, Any]:
        root = request.scope.get("root_path", "").rstrip("/")
        airflow_root = root[: -len(MOUNT_PREFIX)] if root.endswith(MOUNT_PREFIX) else ""
        return {"root": root, "airflow_root": airflow_root, "user": principal.name, **extra}

    # ------------------------------------------------------------------ pages
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def results_page(request: Request, principal: PageUser, db: Store, raw: FilterParams) -> Response:
        error = None
        try:
            f = ResultFilters.parse(**raw)
            data = queries.results(db, f)
        except FilterError as exc:
            error, f, data = str(exc), ResultFilters(), {"results": [], "count": 0, "truncated": False, "filters": {}}
        choices = queries.series_choices(data["results"])
        chart = None
        if f.target and f.batch_size and f.precision:
            chart = {
                "target": f.target,
                "device_kind": f.device_kind,
                "batch_size": f.batch_size,
                "precision": f.precision,
            }
        elif choices:
            chart = choices[0]
        return templates.TemplateResponse(
            request,
            "results.html",
            page_context(
                request,
                principal,
                data=data,
                columns=queries.MAIN_COLUMNS,
                detail_columns=queries.detail_columns(data["results"]),
                raw=raw,
                error=error,
                chart=chart,
                chart_metrics=CHART_METRICS,
                choices=choices,
                csv_query=f.as_query(),
            ),
            status_code=422 if error else status.HTTP_200_OK,
        )

    def report_response(request: Request, principal: Principal, db: ResultsStore, run_key: str) -> Response:
        try:
            report = queries.run_report(db, run_key, rule_config())
        except ResultsNotFound:
            return templates.TemplateResponse(
                request,
                "report.html",
                page_context(request, principal, run_key=run_key, report=None),
                status_code=status.HTTP_404_NOT_FOUND,
            )
        return templates.TemplateResponse(
            request,
            "report.html",
            page_context(request, principal, run_key=run_key, report=report),
        )

    RunKey = Annotated[str, Query(min_length=1, max_length=250, description="the run's key")]
    AirflowId = Annotated[str, Path(min_length=1, max_length=250)]

    @app.get("/runs/{dag_id}/{run_id}", response_class=HTMLResponse, include_in_schema=False)
    def airflow_run_report(request: Request, principal: PageUser, db: Store, dag_id: AirflowId, run_id: AirflowId):
        """The report of an Airflow DAG run (the "ReID report" tab of Airflow's run page links here)."""
        return report_response(request, principal, db, f"{dag_id}/{run_id}")

    @app.get("/report", response_class=HTMLResponse, include_in_schema=False)
    def run_report_page(request: Request, principal: PageUser, db: Store, run: RunKey) -> Response:
        """The report of any run by its key (CLI runs have no Airflow ids)."""
        return report_response(request, principal, db, run)

    @app.get("/alerts", response_class=HTMLResponse, include_in_schema=False)
    def alerts_page(
        request: Request, principal: PageUser, db: Store, show: Annotated[str, Query(pattern="^(open|all)$")] = "open"
    ) -> Response:
        data = queries.alerts(db, open_only=show == "open", since=None, limit=MAX_LIMIT)
        auth: AuthBackend = request.app.state.auth
        dag_perm: dict[str | None, bool] = {}
        for item in data["alerts"]:
            dag_id = item["dag_id"]
            if dag_id not in dag_perm:
                dag_perm[dag_id] = auth.may_edit_runs(principal.user, dag_id)
            item["can_ack"] = item["open"] and dag_perm[dag_id]
        return templates.TemplateResponse(
            request, "alerts.html", page_context(request, principal, data=data, show=show)
        )

    # ------------------------------------------------------------------ API
    @app.get("/api/results")
    def api_results(_user: ApiUser, db: Store, f: Filters) -> dict[str, Any]:
        """Result rows, newest first: one per run x (target, device, batch, precision), perf and accuracy."""
        return queries.results(db, f)

    @app.get("/api/results.csv", response_class=Response)
    def api_results_csv(_user: ApiUser, db: Store, f: CsvFilters) -> Response:
        """The same rows as /api/results as CSV (units in the header)."""
        body = queries.results_csv(queries.results(db, f)["results"])
        return Response(
            body,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="reid-results.csv"'},
        )

    @app.get("/api/series")
    def api_series(
        _user: ApiUser,
        db: Store,
        metric: Annotated[str, Query(description=f"one of {', '.join(METRICS)}")],
        target: Name = None,
        batch_size: BatchSize = None,
        precision: Precision = None,
        device_kind: Name = None,
        mode: Annotated[str, Query(max_length=8)] = "real",
        limit: Annotated[int, Query(ge=2, le=1000)] = 100,
    ) -> dict[str, Any]:
        """History of one metric of one series with its baseline, alert band and alert markers."""
        sel = SeriesSelector.parse(
            metric=metric,
            target=target,
            batch_size=batch_size,
            precision=precision,
            device_kind=device_kind,
            mode=mode,
            limit=limit,
        )
        try:
            return queries.series(db, sel)
        except ResultsError as exc:  # e.g. several device kinds and none chosen
            raise FilterError("device_kind", str(exc)) from exc

    @app.get("/api/report")
    def api_report(_user: ApiUser, db: Store, run: RunKey) -> dict[str, Any]:
        """One run's report: performance by batch size with reference figures, accuracy and parity,
        failures, alerts, and what changed since the run before it (404 for an unknown run)."""
        return queries.run_report(db, run, rule_config())

    @app.get("/api/alerts")
    def api_alerts(
        _user: ApiUser,
        db: Store,
        open_only: Annotated[bool, Query(alias="open", description="only alerts not acknowledged yet")] = False,
        since: When = None,
        limit: Limit = DEFAULT_LIMIT,
    ) -> dict[str, Any]:
        """Regression alerts, newest first."""
        return queries.alerts(db, open_only=open_only, since=parse_when("since", since), limit=limit)

    @app.post("/api/alerts/{alert_id}/ack")
    def api_ack(
        request: Request, principal: ApiUser, db: Store, alert_id: Annotated[int, Path(ge=1, le=2**31 - 1)]
    ) -> dict[str, Any]:
        """Acknowledge an alert (idempotent). Needs permission to edit runs of the alert's DAG."""
        check_csrf(request, principal)
        dag_id = db.alert(alert_id).dag_id  # ResultsNotFound: 404
        if not request.app.state.auth.may_edit_runs(principal.user, dag_id):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"user {principal.name!r} may not edit runs of DAG {dag_id or '(any)'}: cannot acknowledge",
            )
        return {"alert": queries.alert_dict(db.ack(alert_id, by=principal.name))}

    return app
