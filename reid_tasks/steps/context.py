"""The run context: a run's config from its params (CLI) or its context dict (every later step), its store,
its RunInfo. Every step module starts here."""

from __future__ import annotations

import functools
import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ..config import load_config, overrides
from ..settings import SECRET_KEYS, flat, parse_overrides, trigger_spec

#: CLI params -> config keys beyond the trigger form's (a local user's run: any key)
_CLI_KEYS = {
    "checkpoint": "TEST.WEIGHT",
    "dataset_root": "DATASETS.ROOT_DIR",
    "results_db_url": "VALIDATION.RESULTS_DB_URL",
    "artifacts_root": "VALIDATION.ARTIFACTS_ROOT",
    "data_dir": "VALIDATION.DATA_DIR",
}


def safe_name(text: str) -> str:
    """A file-system-safe version of a run key or id."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "run"


def local_run_key() -> str:
    """A unique run key for runs outside Airflow."""
    return f"local/{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


REFERENCE_KEYS = {"VALIDATION.REFERENCE.RANK1": "reference_rank1", "VALIDATION.REFERENCE.MAP": "reference_map"}


def references_given(params: Mapping[str, Any]) -> dict[str, bool]:
    """Which expected-accuracy params the run names explicitly."""
    return {k: params.get(k) not in (None, "") for k in ("reference_rank1", "reference_map")}


def reference_pairs(params: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Explicit expectations are checked alone: a reference param not given is zeroed beside a given one,
    never left at the published default."""
    given = references_given(params)
    if not any(given.values()):
        return []
    return [(key, 0.0) for key, name in REFERENCE_KEYS.items() if not given[name]]


def config_opts(params: Mapping[str, Any]) -> list[Any]:
    """The KEY VALUE list that turns a local (CLI) run's ``params`` into a config (overrides first, explicit
    params last). Every key is allowed: the person at the shell owns the machine."""
    opts = flat(parse_overrides(params.get("config_overrides")))
    for key, cfg_key in {**_CLI_KEYS, **trigger_spec().form_keys}.items():
        value = params.get(key)
        if value not in (None, "", []):
            opts += [cfg_key, list(value) if isinstance(value, tuple) else value]
    opts += flat(reference_pairs(params))
    if params.get("skip_bad"):
        opts += ["VALIDATION.SKIP_BAD", True]
    return opts


@functools.lru_cache(maxsize=16)
def _cfg_cached(config_file: str, opts_json: str) -> Any:
    return load_config(config_file or None, json.loads(opts_json))


def cfg_of(ctx: Mapping[str, Any]) -> Any:
    """The frozen config of a run context."""
    return _cfg_cached(ctx.get("config_file") or "", json.dumps(ctx.get("opts", [])))


def store_of(ctx: Mapping[str, Any]) -> Any:
    from ..results import ResultsStore

    return ResultsStore.open(ctx.get("db_url") or None)


def run_info(ctx: Mapping[str, Any], **extra: Any) -> Any:
    """The run's RunInfo from its context (``extra``: hashes, fingerprint, environment known so far)."""
    from ..results import RunInfo

    return RunInfo(
        run_key=ctx["run_key"],
        trigger=ctx["trigger"],
        dag_id=ctx.get("dag_id"),
        run_id=ctx.get("run_id"),
        started_at=ctx["started_at"],
        config_overrides={k: v for k, v in overrides(cfg_of(ctx)).items() if k not in SECRET_KEYS},
        notes=ctx.get("notes", ""),
        airflow_url=ctx.get("airflow_url"),
        kind=ctx.get("run_kind") or "configured",
        **extra,
    )
