"""prepare_run (a local user's run) and prepare_triggered_run (a run that crossed the trigger boundary):
resolve dataset and checkpoint, check them, create the run directory, record the run as 'running'."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..config import artifacts_root, as_opts, data_dir, load_config, overrides
from ..errors import ConfigError
from ..retention import registering
from ..settings import flat
from ..utils import atomic_write_json, log
from .context import (
    REFERENCE_KEYS,
    config_opts,
    local_run_key,
    reference_pairs,
    references_given,
    run_info,
    safe_name,
    store_of,
)


def prepare_run(
    params: Mapping[str, Any],
    *,
    run_key: str | None = None,
    trigger: str = "cli",
    dag_id: str | None = None,
    run_id: str | None = None,
    airflow_url: str | None = None,
) -> dict[str, Any]:
    """A local (CLI) run: ``params`` may set anything (config file, any override, ``trust_checkpoint``,
    ``db_url``); with neither a checkpoint nor a dataset it is a demo run. See :func:`_prepare`."""
    params = dict(params or {})
    cfg = load_config(params.get("config_file") or None, config_opts(params))
    return _prepare(
        cfg,
        demo_allowed=True,
        trust=bool(params.get("trust_checkpoint")) or bool(cfg.VALIDATION.TRUST_CHECKPOINT),
        db_url=params.get("db_url") or cfg.VALIDATION.RESULTS_DB_URL or "",
        notes=str(params.get("notes") or ""),
        reference_explicit=any(references_given(params).values()),
        identity=dict(run_key=run_key, trigger=trigger, dag_id=dag_id, run_id=run_id, airflow_url=airflow_url),
    )


def prepare_triggered_run(
    params: Mapping[str, Any],
    *,
    conf: Mapping[str, Any] | None = None,
    scheduled: bool = False,
    deployment_text: str | None = None,
    run_key: str | None = None,
    trigger: str = "manual",
    dag_id: str | None = None,
    run_id: str | None = None,
    airflow_url: str | None = None,
) -> dict[str, Any]:
    """A run that crossed the trigger boundary (the DAG). The deployment configuration is read here, on the
    worker (``deployment_text``: the Airflow Variable, see :mod:`reid_tasks.settings`); a manual trigger may
    add run settings from the allow-list, a scheduled run validates the deployment configuration as it is.
    Undeclared conf keys, keys off the allow-list, out-of-range values and paths outside the allowed roots
    are refused (TriggerRefused) before anything is written."""
    from ..settings import check_run_values, check_trigger_conf, deployment_config, trigger_pairs

    params = dict(params or {})
    check_trigger_conf({**{k: None for k in params}, **dict(conf or {})})
    deployment = deployment_config(deployment_text)
    run_pairs = [] if scheduled else trigger_pairs(params, deployment)
    pairs = run_pairs + reference_pairs(params) if run_pairs else []
    cfg = load_config(None, as_opts(overrides(deployment)) + flat(pairs))
    if pairs:
        check_run_values(cfg, deployment)
    return _prepare(
        cfg,
        demo_allowed=bool(deployment.VALIDATION.DEMO),
        trust=bool(deployment.VALIDATION.TRUST_CHECKPOINT),
        db_url=deployment.VALIDATION.RESULTS_DB_URL or "",
        notes="" if scheduled else str(params.get("notes") or ""),
        reference_explicit=any(k in REFERENCE_KEYS for k, _ in run_pairs),
        identity=dict(run_key=run_key, trigger=trigger, dag_id=dag_id, run_id=run_id, airflow_url=airflow_url),
    )


def _nothing_configured(demo_allowed: bool) -> str:
    from ..settings import DEPLOYMENT_WHERE

    demo = "" if demo_allowed else "; to run the synthetic demo instead, set VALIDATION.DEMO: True there"
    return (
        "nothing to validate: no checkpoint (TEST.WEIGHT) and no dataset (DATASETS.ROOT_DIR) are configured. "
        f"Set both in {DEPLOYMENT_WHERE}, or give checkpoint and dataset_root when triggering{demo}"
    )


def resolve_inputs(cfg: Any, demo_allowed: bool) -> tuple[str, str, str]:
    """(dataset root, checkpoint, run kind) of a run. The demo dataset and checkpoint stand in only together:
    for a run that names neither (when ``demo_allowed``), or for the missing half beside the other demo half.
    A real dataset never gets the demo weights, nor a real checkpoint the synthetic set. Run kind: ``demo``
    when the dataset is synthetic or the checkpoint a demo one, else ``configured``."""
    from ..demo import demo_paths, ensure_demo_data, is_demo_checkpoint, is_demo_dataset

    dataset, checkpoint = str(cfg.DATASETS.ROOT_DIR or ""), str(cfg.TEST.WEIGHT or "")
    if not (dataset and checkpoint):
        if not dataset and not checkpoint and not demo_allowed:
            raise ConfigError(_nothing_configured(demo_allowed))
        demo_dir = data_dir(cfg) / "demo"
        paths = demo_paths(demo_dir)
        named, missing = ("dataset", "checkpoint") if dataset else ("checkpoint", "dataset")
        given = dataset or checkpoint
        if given and not (demo_allowed and _same_path(given, getattr(paths, "dataset_root" if dataset else named))):
            raise ConfigError(
                f"the run names a {named} ({given}) but no {missing}: give the {missing} too "
                f"({'checkpoint / TEST.WEIGHT' if missing == 'checkpoint' else 'dataset_root / DATASETS.ROOT_DIR'}). "
                "The demo checkpoint and the synthetic dataset are only ever used together, for a demo run"
                + ("" if demo_allowed else " (and this deployment does not allow demo runs: VALIDATION.DEMO)")
            )
        ensure_demo_data(demo_dir)
        dataset, checkpoint = dataset or paths.dataset_root, checkpoint or paths.checkpoint
    kind = "demo" if is_demo_dataset(dataset) or is_demo_checkpoint(checkpoint) else "configured"
    return dataset, checkpoint, kind


def _same_path(a: str, b: str) -> bool:
    return os.path.realpath(os.path.expanduser(a)) == os.path.realpath(os.path.expanduser(b))


def _prepare(
    cfg: Any,
    *,
    demo_allowed: bool,
    trust: bool,
    db_url: str,
    notes: str,
    reference_explicit: bool,
    identity: Mapping[str, Any],
) -> dict[str, Any]:
    """Resolve dataset and checkpoint, check the inputs, create the run directory and record the run as
    'running'. Returns the run context; ``opts`` hold the whole resolved config (later tasks on other
    workers rebuild exactly this config from it)."""
    from ..results import collect_environment

    dataset_root, checkpoint, run_kind = resolve_inputs(cfg, demo_allowed)
    cfg = load_config(
        None, [*as_opts(overrides(cfg)), "DATASETS.ROOT_DIR", repr(dataset_root), "TEST.WEIGHT", repr(checkpoint)]
    )
    _check_inputs(cfg, dataset_root)
    run_key = identity.get("run_key") or local_run_key()
    root = artifacts_root(cfg)
    run_dir = (root / safe_name(run_key)).resolve()
    ctx = {
        **dict(identity),
        "run_key": run_key,
        "config_file": "",
        "opts": as_opts(overrides(cfg)),
        "checkpoint": checkpoint,
        "trust_checkpoint": trust,
        "dataset_root": dataset_root,
        "run_kind": run_kind,
        "targets": list(cfg.VALIDATION.TARGETS),
        "batch_sizes": [int(b) for b in cfg.VALIDATION.BATCH_SIZES],
        "precisions": list(cfg.VALIDATION.PRECISIONS),
        "run_dir": str(run_dir),
        "cache_dir": str((root / "cache" / safe_name(str(Path(dataset_root).resolve()))[-80:]).resolve()),
        "db_url": db_url,
        "notes": notes,
        "reference_explicit": reference_explicit,
        "started_at": datetime.now(UTC).isoformat(),
    }
    root.mkdir(parents=True, exist_ok=True)
    with registering(root):  # a `reid-validate gc` running now finishes first, then sees this run in progress
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "context.json", ctx)
    store_of(ctx).start_run(run_info(ctx, environment=collect_environment()))
    log.info("run %s (%s): dir %s, dataset %s, checkpoint %s", run_key, run_kind, run_dir, dataset_root, checkpoint)
    return ctx


def _check_inputs(cfg: Any, dataset_root: str) -> None:
    """Fail before any heavy step: unknown targets, an unreadable dataset layout, a missing checkpoint."""
    from ..datasets import Market1501
    from ..targets import get_target

    for name in cfg.VALIDATION.TARGETS:
        get_target(name, cfg)  # UnknownTarget lists the valid names
    Market1501(dataset_root)  # DatasetError names the missing/empty folder or the unparseable file
    if not Path(cfg.TEST.WEIGHT).is_file():
        raise ConfigError(f"checkpoint not found: {cfg.TEST.WEIGHT} (TEST.WEIGHT / --weights / params.checkpoint)")
