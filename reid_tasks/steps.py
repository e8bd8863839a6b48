"""The validation steps as plain functions over small JSON-able dicts.

The DAG calls one function per task and passes their return values through XCom; ``pipeline.run`` chains
the same functions in one process. Each step reads its inputs from files named in the dicts and writes its
outputs atomically under the run directory, so a retried step neither duplicates rows nor leaves partial
files::

    ctx = prepare_run(params, run_key=..., trigger=...)
    export = export_model(ctx);   data = preprocess_data(ctx);   ref = reference_features(ctx, data)
    for combo in plan_combinations(ctx):                      # one per (target, batch size, precision)
        with capture_failure(ctx, "convert", combo):         # a failure is written to the run dir, re-raised
            art = convert_artifact(ctx, export, **combo)
        bench = benchmark_artifact(ctx, art, data)           # (same wrapper, stage "benchmark")
        evaluations.append(evaluate_artifact(ctx, bench, data, ref))   # (stage "evaluate")
    recorded = record_results(ctx, evaluations, export, data)   # + parity across artifacts, failure rows
    verdict = check_regressions(ctx)               # alerts stored; the DAG fails the run if any
    status = finish_run(ctx, "failed" if recorded["failures"] and not verdict["alerts"] else "success")
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import json
import logging
import os
import re
import traceback
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .config import artifacts_root, as_opts, data_dir, load_config, overrides
from .errors import ConfigError, ReidError
from .retention import mark_finished, record_storage, registering
from .settings import FORM_KEYS, SECRET_KEYS, flat, parse_overrides
from .utils import atomic_save_npy, atomic_write_json, file_digest, log, tail

#: CLI params -> config keys (a local user's run: any key)
_PARAM_KEYS = {
    "checkpoint": "TEST.WEIGHT",
    "dataset_root": "DATASETS.ROOT_DIR",
    **FORM_KEYS,
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


def _references_given(params: Mapping[str, Any]) -> dict[str, bool]:
    """Which expected-accuracy params the run names explicitly."""
    return {k: params.get(k) not in (None, "") for k in ("reference_rank1", "reference_map")}


def _reference_pairs(params: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Explicit expectations are checked alone: a reference param not given is zeroed beside a given one,
    never left at the published default."""
    given = _references_given(params)
    if not any(given.values()):
        return []
    return [(key, 0.0) for key, name in _REFERENCE_KEYS.items() if not given[name]]


_REFERENCE_KEYS = {"VALIDATION.REFERENCE.RANK1": "reference_rank1", "VALIDATION.REFERENCE.MAP": "reference_map"}


def config_opts(params: Mapping[str, Any]) -> list[Any]:
    """The KEY VALUE list that turns a local (CLI) run's ``params`` into a config (overrides first, explicit
    params last). Every key is allowed: the person at the shell owns the machine."""
    opts = flat(parse_overrides(params.get("config_overrides")))
    for key, cfg_key in _PARAM_KEYS.items():
        value = params.get(key)
        if value not in (None, "", []):
            opts += [cfg_key, list(value) if isinstance(value, tuple) else value]
    opts += flat(_reference_pairs(params))
    if params.get("skip_bad"):
        opts += ["VALIDATION.SKIP_BAD", True]
    return opts


@functools.lru_cache(maxsize=16)
def _cfg_cached(config_file: str, opts_json: str) -> Any:
    return load_config(config_file or None, json.loads(opts_json))


def cfg_of(ctx: Mapping[str, Any]) -> Any:
    """The frozen config of a run context."""
    return _cfg_cached(ctx.get("config_file") or "", json.dumps(ctx.get("opts", [])))


def _store(ctx: Mapping[str, Any]) -> Any:
    from .results import ResultsStore

    return ResultsStore.open(ctx.get("db_url") or None)


def _run_info(ctx: Mapping[str, Any], **extra: Any) -> Any:
    """The run's RunInfo from its context (``extra``: hashes, fingerprint, environment known so far)."""
    from .results import RunInfo

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


# ------------------------------------------------------------------------------------------------ prepare
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
        reference_explicit=any(_references_given(params).values()),
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
    from .settings import check_run_values, check_trigger_conf, deployment_config, trigger_pairs

    params = dict(params or {})
    check_trigger_conf({**{k: None for k in params}, **dict(conf or {})})
    deployment = deployment_config(deployment_text)
    run_pairs = [] if scheduled else trigger_pairs(params, deployment)
    pairs = run_pairs + _reference_pairs(params) if run_pairs else []
    cfg = load_config(None, as_opts(overrides(deployment)) + flat(pairs))
    if pairs:
        check_run_values(cfg, deployment)
    return _prepare(
        cfg,
        demo_allowed=bool(deployment.VALIDATION.DEMO),
        trust=bool(deployment.VALIDATION.TRUST_CHECKPOINT),
        db_url=deployment.VALIDATION.RESULTS_DB_URL or "",
        notes="" if scheduled else str(params.get("notes") or ""),
        reference_explicit=any(k in _REFERENCE_KEYS for k, _ in run_pairs),
        identity=dict(run_key=run_key, trigger=trigger, dag_id=dag_id, run_id=run_id, airflow_url=airflow_url),
    )


def _nothing_configured(demo_allowed: bool) -> str:
    from .settings import DEPLOYMENT_WHERE

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
    from .demo import demo_paths, ensure_demo_data, is_demo_checkpoint, is_demo_dataset

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
    from .results import collect_environment

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
    _store(ctx).start_run(_run_info(ctx, environment=collect_environment()))
    log.info("run %s (%s): dir %s, dataset %s, checkpoint %s", run_key, run_kind, run_dir, dataset_root, checkpoint)
    return ctx


def _check_inputs(cfg: Any, dataset_root: str) -> None:
    """Fail before any heavy step: unknown targets, an unreadable dataset layout, a missing checkpoint."""
    from .datasets import Market1501
    from .targets import get_target

    for name in cfg.VALIDATION.TARGETS:
        get_target(name, cfg)  # UnknownTarget lists the valid names
    Market1501(dataset_root)  # DatasetError names the missing/empty folder or the unparseable file
    if not Path(cfg.TEST.WEIGHT).is_file():
        raise ConfigError(f"checkpoint not found: {cfg.TEST.WEIGHT} (TEST.WEIGHT / --weights / params.checkpoint)")


# ------------------------------------------------------------------------------------------------ data + model
def export_model(ctx: Mapping[str, Any]) -> dict[str, Any]:
    """Checkpoint -> ONNX in the run directory; the export report as a dict."""
    from .export import export_onnx

    report = export_onnx(cfg_of(ctx), Path(ctx["run_dir"]) / "onnx" / "ReID.onnx", trust=ctx["trust_checkpoint"])
    return report.to_dict()


def preprocess_data(ctx: Mapping[str, Any]) -> dict[str, Any]:
    """Dataset -> tensor cache (shared across runs; reused when images and settings are unchanged)."""
    from .datasets import Market1501
    from .preprocess import preprocess_dataset

    cfg = cfg_of(ctx)
    dataset = Market1501(ctx["dataset_root"])
    cache = preprocess_dataset(
        dataset, ctx["cache_dir"], cfg, workers=int(cfg.VALIDATION.WORKERS) or None, skip_bad=cfg.VALIDATION.SKIP_BAD
    )
    record_storage(ctx["run_dir"], cache.dir, cache.fingerprint)  # `reid-validate gc` keeps what the run uses
    return {
        "cache_dir": str(cache.dir),
        "fingerprint": cache.fingerprint,
        "dataset_fingerprint": dataset.fingerprint(),
        "num_query": int(cache.num_query),
        "count": len(cache),
        "num_gallery": len(cache) - int(cache.num_query),
        "bad": list(cache.bad),
    }


def _calibration_choice(cfg: Any, dataset: Any) -> tuple[str, list[Any]]:
    """(split, images) that calibrate int8: VALIDATION.CALIBRATION.NUM_IMAGES evenly spaced over
    bounding_box_train when the dataset has it, else over the gallery (a hold-out the parity sample excludes).
    Never query images: calibrating on what is evaluated would flatter int8."""
    from .targets.parity import sample_indices

    split, pool = ("train", dataset.train) if dataset.train else ("gallery-holdout", dataset.gallery)
    n = min(int(cfg.VALIDATION.CALIBRATION.NUM_IMAGES), len(pool))
    if n < 1:
        raise ConfigError(
            f"VALIDATION.CALIBRATION.NUM_IMAGES must be >= 1, got {cfg.VALIDATION.CALIBRATION.NUM_IMAGES}"
        )
    return split, [pool[int(i)] for i in sample_indices(0, len(pool), n)]


def _calibration_fingerprint(split: str, items: Sequence[Any]) -> str:
    """sha256 over the calibration images' split, names, pid/camid and bytes (order included)."""
    import hashlib

    h = hashlib.sha256()
    for it in items:
        h.update(f"{split}/{Path(it.path).name} {it.pid} {it.camid} {file_digest(it.path)}\n".encode())
    return h.hexdigest()


def calibration_set(ctx: Mapping[str, Any]) -> Any:
    """The int8 calibration images, preprocessed, with their record (split, files, fingerprint)."""
    from .datasets import Market1501
    from .preprocess import preprocess_image
    from .targets.build import CalibrationSet

    cfg = cfg_of(ctx)
    split, items = _calibration_choice(cfg, Market1501(ctx["dataset_root"]))
    record = {
        "source": "dataset",
        "split": split,
        "selection": "evenly spaced by file name",
        "num_images": len(items),
        "images": [Path(it.path).name for it in items],
        "fingerprint": _calibration_fingerprint(split, items),
    }
    return CalibrationSet(np.stack([preprocess_image(it.path, cfg) for it in items]), record)


def _held_out_rows(ctx: Mapping[str, Any], cache: Any) -> list[int]:
    """Cache rows of the calibration hold-out (empty when int8 is calibrated on bounding_box_train)."""
    from .datasets import Market1501

    split, items = _calibration_choice(cfg_of(ctx), Market1501(ctx["dataset_root"]))
    if split == "train":
        return []
    paths = {str(Path(it.path).resolve()) for it in items}
    return [i for i, it in enumerate(cache.items) if i >= cache.num_query and str(Path(it.path).resolve()) in paths]


def _needs_full_reference(ctx: Mapping[str, Any]) -> bool:
    """True when a planned reduced-precision artifact has no fp32 artifact of its target in the run: its
    Rank-1/mAP are then compared with the PyTorch reference over the full set."""
    combos = plan_combinations(ctx)
    fp32 = {c["target"] for c in combos if c["precision"] == "fp32"}
    return any(c["precision"] != "fp32" and c["target"] not in fp32 for c in combos)


class _Rows:
    """The rows ``indices`` of a TensorCache as a batch source."""

    def __init__(self, cache: Any, indices: np.ndarray) -> None:
        self.cache, self.indices = cache, indices

    def __len__(self) -> int:
        return len(self.indices)

    def batch(self, start: int, stop: int) -> np.ndarray:
        return np.concatenate([self.cache.batch(int(i), int(i) + 1) for i in self.indices[start:stop]])


def reference_features(ctx: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """PyTorch fp32 eager features on the parity sample (VALIDATION.PARITY.SAMPLE rows drawn from query and
    gallery, calibration hold-out excluded): the reference every artifact is compared with. Over the full set,
    with its Rank-1/mAP, when the set is no bigger than the sample or a reduced precision has no fp32 artifact
    of its target in the run."""
    from .export import reference_features as torch_features
    from .preprocess import TensorCache
    from .targets.parity import evaluate_features, sample_indices

    cfg = cfg_of(ctx)
    cache = TensorCache.open(data["cache_dir"])
    held_out = _held_out_rows(ctx, cache)
    indices = sample_indices(cache.num_query, len(cache) - cache.num_query, int(cfg.VALIDATION.PARITY.SAMPLE), held_out)
    out_dir = Path(ctx["run_dir"]) / "reference"
    out: dict[str, Any] = {"sample_size": len(indices), "held_out": len(held_out), "covers_dataset": False}
    if len(cache) <= int(cfg.VALIDATION.PARITY.SAMPLE) or _needs_full_reference(ctx):
        full = torch_features(cfg, cache, trust=ctx["trust_checkpoint"])
        out["metrics"] = evaluate_features(full, cache, cfg).percent()
        out["covers_dataset"] = True
        feats = full[indices]
    else:
        feats = torch_features(cfg, _Rows(cache, indices), trust=ctx["trust_checkpoint"])
    out["path"] = str(atomic_save_npy(out_dir / "pytorch_fp32.npy", feats))
    out["indices_path"] = str(atomic_save_npy(out_dir / "sample_indices.npy", indices))
    out["num_images"] = len(indices)
    return out


# ------------------------------------------------------------------------------------------------ per artifact
def plan_combinations(ctx: Mapping[str, Any], target: str | None = None) -> list[dict[str, Any]]:
    """(target, batch_size, precision) combinations of the run; ones a target cannot do are dropped (logged)."""
    from .targets import get_target

    combos = []
    for name in [target] if target else ctx["targets"]:
        if name not in ctx["targets"]:
            continue
        supported = get_target(name, cfg_of(ctx)).supported_precisions()
        for precision in ctx["precisions"]:
            if precision not in supported:
                log.warning("plan: %s cannot build %s here (supports %s): not scheduled", name, precision, supported)
                continue
            combos += [{"target": name, "batch_size": b, "precision": precision} for b in ctx["batch_sizes"]]
    return combos


def _artifact_dir(ctx: Mapping[str, Any], target: str, batch_size: int, precision: str) -> Path:
    return Path(ctx["run_dir"]) / "artifacts" / target / f"bs{batch_size}_{precision}"


def convert_artifact(
    ctx: Mapping[str, Any], export: Mapping[str, Any], target: str, batch_size: int, precision: str
) -> dict[str, Any]:
    """ONNX -> the target's artifact for one (batch size, precision)."""
    from .targets import get_target

    t = get_target(target, cfg_of(ctx))
    calibration = calibration_set(ctx) if precision == "int8" else None
    art = t.convert(
        export["onnx_path"],
        int(batch_size),
        precision,
        _artifact_dir(ctx, target, batch_size, precision),
        calibration=calibration,
    )
    return art.to_dict()


def benchmark_artifact(ctx: Mapping[str, Any], artifact: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """Benchmark one artifact on a leased device: the bounded pure-inference benchmark first (stable throughput
    and latency percentiles), then ONE pass over the dataset (features + end-to-end throughput), planned from
    the measured throughput so a pass that cannot fit the task's time limit stops before it starts."""
    import time

    from .fleet import lease_for, local_host
    from .preprocess import TensorCache
    from .runcost import dataset_pass_budget
    from .targets import Artifact, get_target

    started = time.monotonic()
    cfg = cfg_of(ctx)
    bench = cfg.VALIDATION.BENCH
    art = Artifact.from_dict(artifact)
    t = get_target(art.target, cfg)
    out_dir = _artifact_dir(ctx, art.target, int(art.batch_size or 0), art.precision) / "bench"
    what = f"{art.target} bs{art.batch_size} {art.precision}"
    with lease_for(t, label=f"{ctx['run_key']} {what}") as lease:
        cache = TensorCache.open(data["cache_dir"])
        dev = lease.device.id if lease else None
        pure = t.benchmark_pure(art, **t.run_options(device_id=dev)) if cfg.VALIDATION.PURE else None
        budget = dataset_pass_budget(
            len(cache),
            pure.throughput_median if pure else None,
            min_throughput=float(bench.MIN_THROUGHPUT),
            left_s=float(bench.TASK_TIMEOUT_S) - (time.monotonic() - started),
            what=what,
        )
        feats, perf = t.run(art, cache, out_dir, repeats=1, **t.run_options(device_id=dev, timeout_s=budget.timeout_s))
        device = lease.as_dict() if lease else {"device_host": local_host(), "device_id": perf.device_id}
    feats_path = out_dir / "features.npy"
    if not feats_path.is_file():
        atomic_save_npy(feats_path, feats)
    return {
        "artifact": dict(artifact),
        "features_path": str(feats_path),
        "perf": _measured_on(art.target, {**perf.to_dict(), **device}),
        "perf_pure": _measured_on(art.target, {**pure.to_dict(), **device}) if pure else None,
        "budget": budget.as_dict(),
    }


def _measured_on(target: str, perf: dict[str, Any]) -> dict[str, Any]:
    """A perf dict with what it was measured on, taken here ON THE BENCHMARK WORKER: ``hardware`` (plus what
    the target adds in ``extra["hardware"]``, e.g. Ascend SoC / driver / chips), ``environment`` (this
    worker's packages) and ``simulated`` (numbers from test doubles)."""
    from .hardware import collect_environment, collect_hardware

    extra = perf.get("extra") or {}
    dev = perf.get("device_kind") if perf.get("device_id") is None else f"{perf['device_kind']}:{perf['device_id']}"
    hardware = {**collect_hardware(target, device=dev), **(extra.get("hardware") or {})}
    simulated = bool(perf.get("simulated") or extra.get("double"))
    return {**perf, "hardware": hardware, "environment": collect_environment(), "simulated": simulated}


def evaluate_artifact(
    ctx: Mapping[str, Any], bench: Mapping[str, Any], data: Mapping[str, Any], reference: Mapping[str, Any]
) -> dict[str, Any]:
    """Rank-k / mAP / mINP of one artifact's features over the full set, and its parity gate
    (reid_tasks.targets.parity): features vs the PyTorch reference on the parity sample; for reduced precisions
    Rank-1/mAP vs the PyTorch full-set result when the run has it. ``record_results`` settles the comparison
    with the same target's fp32 artifact, which only it sees."""
    from .preprocess import TensorCache
    from .targets.parity import (
        PYTORCH_SOURCE,
        REDUCED_PRECISIONS,
        apply_metric_rule,
        assess,
        evaluate_features,
        parity_record,
    )

    cfg = cfg_of(ctx)
    cache = TensorCache.open(data["cache_dir"])
    feats = np.load(bench["features_path"])
    if feats.shape != (len(cache), 2048):
        raise ReidError(f"{bench['features_path']}: features shape {feats.shape}, expected ({len(cache)}, 2048)")
    metrics = evaluate_features(feats, cache, cfg)
    got = metrics.percent()
    art = bench["artifact"]
    precision = art["precision"]
    batch_size = int(art["batch_size"] or bench["perf"]["batch_size"])
    indices = np.load(reference["indices_path"])
    ref = np.load(reference["path"])
    label = f"{art['target']} bs{batch_size} {precision}"
    assessment = assess(feats[indices], ref, precision=precision, cfg=cfg, label=label)
    pytorch = reference.get("metrics") if precision in REDUCED_PRECISIONS else None
    record = {
        "target": art["target"],
        "batch_size": batch_size,
        "precision": precision,
        "metrics": got,
        "counts": {
            "valid_queries": int(metrics.num_valid_queries),
            "gallery_size": int(metrics.num_gallery),
            "skipped_queries": int(metrics.num_skipped_queries),
        },
        "feat_norm": cfg.TEST.FEAT_NORM == "yes",
        "re_ranking": cfg.TEST.RE_RANKING == "yes",
        "parity": parity_record(
            assessment,
            sample_size=len(indices),
            fp32_source=PYTORCH_SOURCE if pytorch else None,
            fp32_metrics=pytorch,
        ),
        "calibration_fingerprint": (art.get("calibration") or {}).get("fingerprint") if precision == "int8" else None,
        "simulated": bool(bench["perf"].get("simulated") or (bench["perf"].get("extra") or {}).get("double")),
        "perf": bench["perf"],
        "perf_pure": bench.get("perf_pure"),
        "artifact_sha256": art.get("sha256"),
    }
    return apply_metric_rule([record], cfg)[0]  # sets flagged / flag_reasons too


def finalize_parity(ctx: Mapping[str, Any], evaluations: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The run's evaluated records with the parity gate settled across artifacts: reduced precisions compared
    with their target's fp32 artifact (reid_tasks.targets.parity.apply_metric_rule). Idempotent."""
    from .targets.parity import apply_metric_rule

    return apply_metric_rule([e for e in evaluations if e], cfg_of(ctx))


# ------------------------------------------------------------------------------------------------ failures
FAILURES_DIR = "failures"
FAILURE_STAGES = ("convert", "benchmark", "evaluate")


def _failure_path(ctx: Mapping[str, Any], target: str, batch_size: int, precision: str) -> Path:
    return Path(ctx["run_dir"]) / FAILURES_DIR / f"{safe_name(target)}_bs{int(batch_size)}_{safe_name(precision)}.json"


class _LogTail(logging.Handler):
    """The last lines the reid_tasks loggers wrote while one step ran."""

    def __init__(self, lines: int = 200) -> None:
        super().__init__(logging.INFO)
        self.lines: collections.deque[str] = collections.deque(maxlen=lines)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextlib.contextmanager
def capture_failure(ctx: Mapping[str, Any], stage: str, combo: Mapping[str, Any], attempt: int = 1) -> Iterator[None]:
    """Run one artifact's step (``stage``: convert | benchmark | evaluate of ``combo``'s target, batch size and
    precision). If it raises, write the failure (stage, message, log tail, attempt) atomically to
    ``<run_dir>/failures/`` and re-raise: ``record_results`` stores it as the artifact's failure row."""
    if stage not in FAILURE_STAGES:
        raise ValueError(f"stage must be one of {FAILURE_STAGES}, got {stage!r}")
    handler = _LogTail()
    log.addHandler(handler)
    try:
        yield
    except Exception as exc:
        failure = {
            "target": combo["target"],
            "batch_size": int(combo["batch_size"]),
            "precision": combo["precision"],
            "stage": stage,
            "message": f"{type(exc).__name__}: {exc}"[:4000],
            "log_tail": tail("\n".join([*handler.lines, traceback.format_exc()]), 80),
            "attempt": int(attempt),
            "recorded_at": datetime.now(UTC).isoformat(),
        }
        atomic_write_json(_failure_path(ctx, combo["target"], combo["batch_size"], combo["precision"]), failure)
        raise
    finally:
        log.removeHandler(handler)


def run_failures(ctx: Mapping[str, Any], evaluations: Sequence[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """The failure records of the run's artifacts that have no evaluated record (a retry that succeeded wins)."""
    done = {(e["target"], int(e["batch_size"]), e["precision"]) for e in evaluations if e}
    out = []
    for path in sorted((Path(ctx["run_dir"]) / FAILURES_DIR).glob("*.json")):
        f = json.loads(path.read_text(encoding="utf-8"))
        if (f["target"], int(f["batch_size"]), f["precision"]) not in done:
            out.append(f)
    return out


# ------------------------------------------------------------------------------------------------ results
def _eval_config(cfg: Any) -> dict[str, Any]:
    """The evaluation config that is part of a series' identity."""
    return {"neck_feat": str(cfg.TEST.NECK_FEAT), "feat_norm": cfg.TEST.FEAT_NORM == "yes"}


def _perf_row(perf: Mapping[str, Any], precision: str, eval_config: Mapping[str, Any]) -> Any:
    from .results import PerfRow

    return PerfRow(
        target=perf["target"],
        device_kind=str(perf["device_kind"]),
        batch_size=int(perf["batch_size"]),
        precision=perf.get("precision") or precision,
        mode=perf.get("mode", "real"),
        throughput_best=float(perf["throughput_best"]),
        throughput_median=float(perf["throughput_median"]),
        latency_mean_ms=perf.get("latency_ms_mean"),
        latency_p50_ms=perf.get("latency_ms_p50"),
        latency_p90_ms=perf.get("latency_ms_p90"),
        latency_p99_ms=perf.get("latency_ms_p99"),
        e2e_throughput=perf.get("e2e_throughput"),
        card_throughput=perf.get("card_throughput"),
        samples=int(perf["samples"]),
        repetitions=int(perf["repeats"]),
        warmup=int(perf.get("warmup", 0)),
        device_id=None if perf.get("device_id") is None else str(perf["device_id"]),
        tool_versions=dict(perf.get("tool_versions") or {}),
        artifact_sha256=(perf.get("extra") or {}).get("artifact_sha256"),
        simulated=bool(perf.get("simulated") or (perf.get("extra") or {}).get("double")),
        hardware=dict(perf.get("hardware") or {}),
        device_host=perf.get("device_host"),
        neck_feat=eval_config["neck_feat"],
        feat_norm=eval_config["feat_norm"],
    )


def _worker_environment(evaluations: Sequence[Mapping[str, Any]], extra: Mapping[str, Any]) -> dict[str, Any]:
    """The run's environment as the benchmark workers saw it: one worker's environment (all alike), else this
    host's with each target's worker under ``workers``; ``extra`` (devices, tool versions) on top."""
    from .results import collect_environment

    workers = {e["perf"]["target"]: e["perf"]["environment"] for e in evaluations if e["perf"].get("environment")}
    distinct = {json.dumps(w, sort_keys=True, default=str) for w in workers.values()}
    if len(distinct) == 1:
        return {**next(iter(workers.values())), **extra}
    env = collect_environment(extra)
    if workers:
        env["workers"] = workers
    return env


def record_results(
    ctx: Mapping[str, Any],
    evaluations: Sequence[Mapping[str, Any]],
    export: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Upsert the run (with model/ONNX hashes, dataset fingerprint, environment) and its perf/accuracy rows,
    with the parity gate settled across artifacts; ``failures``: the artifacts that failed (``capture_failure``)."""
    from .results import AccuracyRow, FailureRow

    evaluations = finalize_parity(ctx, evaluations)
    eval_config = _eval_config(cfg_of(ctx))
    store = _store(ctx)
    env_extra: dict[str, Any] = {}
    for e in evaluations:
        perf = e["perf"]
        env_extra.setdefault("devices", {})[perf["target"]] = {
            "device_kind": perf["device_kind"],
            "device_id": perf.get("device_id"),
        }
        for k, v in (perf.get("tool_versions") or {}).items():
            env_extra.setdefault("tool_versions", {})[f"{perf['target']}:{k}"] = v
    store.start_run(
        _run_info(
            ctx,
            model_sha256=(export or {}).get("checkpoint_sha256"),
            onnx_sha256=(export or {}).get("onnx_sha256"),
            dataset_fingerprint=dict((data or {}).get("dataset_fingerprint") or {}),
            environment=_worker_environment(evaluations, env_extra),
        ),
        reset_status=False,
    )
    perf_rows = acc_rows = 0
    for e in evaluations:
        for perf in (e["perf"], e.get("perf_pure")):
            if perf:
                store.record_perf(ctx["run_key"], _perf_row(perf, e["precision"], eval_config))
                perf_rows += 1
        m, c, p = e["metrics"], e["counts"], e["parity"]
        store.record_accuracy(
            ctx["run_key"],
            AccuracyRow(
                target=e["target"],
                batch_size=int(e["batch_size"]),
                precision=e["precision"],
                rank1=m["rank1"],
                rank5=m["rank5"],
                rank10=m["rank10"],
                mAP=m["mAP"],
                mINP=m["mINP"],
                valid_queries=c["valid_queries"],
                gallery_size=c["gallery_size"],
                feat_norm=bool(e["feat_norm"]),
                re_ranking=bool(e["re_ranking"]),
                parity_min_cosine=p["min_cosine"],
                parity_mean_cosine=p["mean_cosine"],
                parity_max_abs_diff=p["max_abs_diff"],
                flagged=bool(e["flagged"]),
                flag_reason="; ".join(e["flag_reasons"]) or None,
                simulated=bool(e.get("simulated") or e["perf"].get("simulated")),
                parity_passed=p.get("passed"),
                parity_sample_size=p.get("sample_size"),
                parity_detail={k: v for k, v in p.items() if k not in ("min_cosine", "mean_cosine", "max_abs_diff")},
                calibration_fingerprint=e.get("calibration_fingerprint"),
                neck_feat=eval_config["neck_feat"],
            ),
        )
        acc_rows += 1
    for e in evaluations:  # a retried task that succeeded replaces its failure row
        store.clear_failure(ctx["run_key"], e["target"], int(e["batch_size"]), e["precision"])
    failures = run_failures(ctx, evaluations)
    for f in failures:
        store.record_failure(
            ctx["run_key"],
            FailureRow(
                target=f["target"],
                batch_size=int(f["batch_size"]),
                precision=f["precision"],
                stage=f["stage"],
                message=f["message"],
                log_tail=f.get("log_tail") or "",
                attempt=int(f.get("attempt") or 1),
            ),
        )
    return {
        "run_key": ctx["run_key"],
        "perf_rows": perf_rows,
        "accuracy_rows": acc_rows,
        "failures": [{k: f[k] for k in ("target", "batch_size", "precision", "stage", "message")} for f in failures],
    }


#: md5 of the released market_resnet50_model_120_rank1_945.pth, whose published accuracy is the reference
RELEASED_CHECKPOINT_MD5 = "0811054928b8aa70b6ea64e71ef99aaf"


#: Rank-1 / mAP published for the released checkpoint with re-ranking (reid-strong-baseline, float16 re-ranking)
PUBLISHED_RERANK = {"rank1": 95.4, "mAP": 94.2}


def reference_applies(ctx: Mapping[str, Any]) -> bool:
    """The published Rank-1/mAP are a valid reference only for the released checkpoint evaluated as published
    (``TEST.NECK_FEAT after``, ``TEST.FEAT_NORM yes``), or when the run's params name reference values
    explicitly (another checkpoint, its own expected accuracy)."""
    if ctx.get("reference_explicit"):
        return True
    return _published_applies(ctx)


def _published_applies(ctx: Mapping[str, Any]) -> bool:
    cfg = cfg_of(ctx)
    if str(cfg.TEST.NECK_FEAT) != "after" or str(cfg.TEST.FEAT_NORM) != "yes":
        return False
    path = Path(ctx.get("checkpoint") or "")
    if not path.is_file():
        return False
    return file_digest(path, "md5") == RELEASED_CHECKPOINT_MD5


def check_regressions(ctx: Mapping[str, Any]) -> dict[str, Any]:
    """Evaluate the regression rules for the run, store its alerts (replacing earlier ones) and return the
    verdict; raising is left to the caller (the DAG fails the run after notifying)."""
    from .results import RuleConfig

    use_reference = reference_applies(ctx)
    rules = RuleConfig.from_cfg(cfg_of(ctx), use_reference=use_reference)
    if use_reference and not ctx.get("reference_explicit") and _published_applies(ctx):
        rules = dataclasses.replace(
            rules, reference_rerank_rank1=PUBLISHED_RERANK["rank1"], reference_rerank_map=PUBLISHED_RERANK["mAP"]
        )
    verdict = _store(ctx).evaluate_run(ctx["run_key"], rules)
    out = verdict.to_dict()
    out["summary"] = verdict.summary_lines()
    if not use_reference:
        out["summary"].append(
            "accuracy vs published reference: not applied (not the released checkpoint evaluated with "
            "TEST.NECK_FEAT after / TEST.FEAT_NORM yes, and no reference given)"
        )
    return out


def finish_run(ctx: Mapping[str, Any], status: str) -> str:
    """Mark the run finished: ``success`` (stored as ``regressed`` when it has open alerts) or ``failed``.
    Returns the stored status. The run directory gets ``finished.json`` (status, time, bytes under it), and
    the bytes are stored with the run (``reid-validate results`` shows them)."""
    store = _store(ctx)
    stored = store.finish_run(ctx["run_key"], status)
    store.set_disk_usage(ctx["run_key"], mark_finished(ctx["run_dir"], stored))
    return stored


def iter_evaluations(ctx: Mapping[str, Any], combos: Iterable[Mapping[str, Any]], export, data, reference):
    """Convert -> benchmark -> evaluate for each combination, in process (the local pipeline). A combination
    that fails is written as a failure record (``capture_failure``), logged, and the next one runs."""
    for combo in combos:
        try:
            with capture_failure(ctx, "convert", combo):
                art = convert_artifact(ctx, export, combo["target"], combo["batch_size"], combo["precision"])
            with capture_failure(ctx, "benchmark", combo):
                bench = benchmark_artifact(ctx, art, data)
            with capture_failure(ctx, "evaluate", combo):
                evaluated = evaluate_artifact(ctx, bench, data, reference)
        except Exception as exc:  # written by capture_failure: record_results stores it as a failure row
            log.error("%s bs%s %s failed (recorded): %s", combo["target"], combo["batch_size"], combo["precision"], exc)
            continue
        yield evaluated
