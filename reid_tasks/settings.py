"""Run settings and deployment settings: what a trigger may change, and what only the deployment decides.

The trust boundary is the trigger (the Airflow form, the REST API's ``conf``, a schedule). Two kinds of
settings cross it differently:

- **Run settings** come from the trigger: the form's params (:data:`TRIGGER_PARAMS`) and config keys on the
  allow-list :data:`RUN_SETTABLE_KEYS` (in ``config_overrides`` or a trigger's config file). Values are
  checked (enums, bounds, device ids among the deployment's) and paths (checkpoint, dataset, config file)
  must resolve, after symlinks, under ``VALIDATION.ALLOWED_ROOTS``.
- **Deployment settings** are every other config key: tool paths and binaries, install paths, the results
  database, the artifacts root and data dir, ``VALIDATION.RULES.*`` / ``VALIDATION.PARITY.*``, trust of pickled
  checkpoints, the allowed roots, whether demo runs are allowed. They come only from the deployment
  configuration read on the worker at run time (:func:`deployment_config`), in this order, later wins:

      product defaults < $REID_CONFIG_FILE (yml) < Airflow Variable ``reid_deployment_config`` (yml or JSON)

  and, where those leave a value empty, the environment fallbacks ($REID_DATA_DIR, $REID_RESULTS_DB_URL,
  $REID_ARTIFACTS_ROOT, the Airflow connection ``reid_results_db``).

A trigger that carries anything else is refused at its first task, naming each key and where it belongs.
The CLI (``reid-validate run``) is a local user's tool and keeps every override.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError

#: The Airflow Variable holding deployment settings (yml or JSON text, the same keys as a config file).
DEPLOYMENT_VARIABLE = "reid_deployment_config"
#: Where a deployment setting belongs (quoted in every refusal).
DEPLOYMENT_WHERE = (
    f"the deployment configuration on the workers ($REID_CONFIG_FILE or the Airflow Variable {DEPLOYMENT_VARIABLE})"
)

SOC_VERSIONS = ("Ascend310", "Ascend310P1", "Ascend310P3", "Ascend310B1", "Ascend910", "Ascend910B")
BENCH_REPEATS_RANGE = (1, 100)
BATCH_SIZE_RANGE = (1, 256)

#: Config keys a trigger may set, and what each one is. Keys ending in "." allow the whole node: the
#: reid-strong-baseline nodes that describe the model (its yml files set them); none of them chooses a
#: binary, a file that is read, a database or a gate.
RUN_SETTABLE_KEYS: dict[str, str] = {
    "VALIDATION.TARGETS": "inference targets to validate (registered names)",
    "VALIDATION.BATCH_SIZES": f"batch sizes, unique integers {BATCH_SIZE_RANGE[0]}..{BATCH_SIZE_RANGE[1]}",
    "VALIDATION.PRECISIONS": "precisions (fp32, fp16, bf16, int8)",
    "VALIDATION.ASCEND.SOC_VERSION": f"ATC --soc_version, one of {', '.join(SOC_VERSIONS)}",
    "VALIDATION.ASCEND.DEVICE_IDS": "Ascend devices, among the deployment's VALIDATION.ASCEND.DEVICE_IDS",
    "VALIDATION.REFERENCE.RANK1": "expected Rank-1 in percent, 0..100",
    "VALIDATION.REFERENCE.MAP": "expected mAP in percent, 0..100",
    "VALIDATION.BENCH.REPEATS": f"timed repetitions, {BENCH_REPEATS_RANGE[0]}..{BENCH_REPEATS_RANGE[1]}",
    "TEST.WEIGHT": "checkpoint (.pth), under VALIDATION.ALLOWED_ROOTS",
    "TEST.NECK_FEAT": "after | before",
    "TEST.FEAT_NORM": "yes | no",
    "TEST.RE_RANKING": "yes | no",
    "TEST.IMS_PER_BATCH": "reid-strong-baseline's test batch (not used for inference)",
    "DATASETS.ROOT_DIR": "Market-1501 root, under VALIDATION.ALLOWED_ROOTS",
    "DATASETS.NAMES": "market1501",
    "MODEL.": "the network (reid-strong-baseline MODEL node)",
    "INPUT.": "input size and normalisation (reid-strong-baseline INPUT node)",
    "DATALOADER.": "training only (reid-strong-baseline)",
    "SOLVER.": "training only (reid-strong-baseline)",
    "OUTPUT_DIR": "training only (reid-strong-baseline)",
}

#: Config keys holding a path a trigger may name; confined to the allowed roots.
PATH_KEYS = ("TEST.WEIGHT", "DATASETS.ROOT_DIR")

#: The params of the trigger form (everything a trigger's conf may carry).
TRIGGER_PARAMS = (
    "checkpoint",
    "config_file",
    "config_overrides",
    "dataset_root",
    "targets",
    "batch_sizes",
    "precisions",
    "soc_version",
    "device_ids",
    "reference_rank1",
    "reference_map",
    "notes",
)

#: Trigger conf keys people try that are deployment settings, with the key they belong to.
_DEPLOYMENT_PARAMS = {
    "trust_checkpoint": "VALIDATION.TRUST_CHECKPOINT",
    "results_db_url": "VALIDATION.RESULTS_DB_URL (or $REID_RESULTS_DB_URL / Airflow connection reid_results_db)",
    "db_url": "VALIDATION.RESULTS_DB_URL (or $REID_RESULTS_DB_URL / Airflow connection reid_results_db)",
    "artifacts_root": "VALIDATION.ARTIFACTS_ROOT (or $REID_ARTIFACTS_ROOT)",
    "data_dir": "VALIDATION.DATA_DIR (or $REID_DATA_DIR)",
    "allowed_roots": "VALIDATION.ALLOWED_ROOTS",
    "skip_bad": "VALIDATION.SKIP_BAD",
    "demo": "VALIDATION.DEMO",
}

#: A config key as written in an override: dotted upper-case names.
_KEY = r"[A-Z][A-Z0-9_]*(?:\.[A-Z0-9_]+)*"
#: One "KEY VALUE" override (an item of the JSON list form).
OVERRIDE_ITEM_PATTERN = rf"^\s*{_KEY}\s+\S.*$"
#: "KEY VALUE" lines (the form's text): blank lines and "# comments" allowed.
OVERRIDE_LINES_PATTERN = rf"^(?:[ \t]*(?:(?:{_KEY}[ \t]+\S[^\r\n]*)|#[^\r\n]*)?[ \t]*(?:\r?\n|$))*$"
#: A key of the JSON object form.
OVERRIDE_KEY_PATTERN = rf"^{_KEY}$"


class TriggerRefused(ConfigError):
    """A trigger carried a setting it may not set, a value out of bounds, or a path outside the allowed roots."""


def run_settable(key: str) -> bool:
    """Whether config key ``key`` is on the run-settable allow-list."""
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in RUN_SETTABLE_KEYS)


def parse_overrides(value: Any) -> list[tuple[str, Any]]:
    """``config_overrides`` as (KEY, VALUE) pairs. Accepts "KEY VALUE" lines in one string (blank lines and
    ``#`` comments skipped), a list of "KEY VALUE" strings, a flat [KEY, VALUE, ...] list (the CLI's), or an
    object {KEY: VALUE}. Values stay as written (yacs decodes literals when merging)."""
    if value is None or value == "" or value == [] or value == {}:
        return []
    if isinstance(value, Mapping):
        return [(str(k), v) for k, v in value.items()]
    if isinstance(value, str):
        items: list[Any] = [ln for ln in value.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    elif isinstance(value, Sequence):
        items = list(value)
    else:
        kind = type(value).__name__
        raise ConfigError(f"config_overrides: expected KEY VALUE lines, a list or an object, got {kind}")
    pairs: list[tuple[str, Any]] = []
    pending: str | None = None
    for item in items:
        if pending is not None:
            pairs.append((pending, item))
            pending = None
            continue
        text = str(item).strip()
        key, _, val = text.partition(" ") if " " in text else text.partition("\t")
        if val.strip():
            pairs.append((key, val.strip()))
        elif isinstance(item, str) and re.fullmatch(_KEY, text):
            pending = text  # flat [KEY, VALUE, ...] form
        else:
            raise ConfigError(f"config_overrides: {text[:80]!r} is not a KEY VALUE pair")
    if pending is not None:
        raise ConfigError(f"config_overrides: key {pending!r} has no value (KEY VALUE pairs expected)")
    return pairs


def flat(pairs: Iterable[tuple[str, Any]]) -> list[Any]:
    """(KEY, VALUE) pairs as the flat list ``load_config`` takes."""
    return [x for kv in pairs for x in kv]


def check_trigger_conf(conf: Mapping[str, Any] | None) -> None:
    """Refuse a trigger whose conf carries keys the form does not declare (Airflow merges them into the
    run's params); the message names each key and where such a setting belongs."""
    problems = []
    for key in sorted(conf or {}):
        if key in TRIGGER_PARAMS:
            continue
        if key in _DEPLOYMENT_PARAMS:
            problems.append(f"{key!r} is a deployment setting: {_DEPLOYMENT_PARAMS[key]} in {DEPLOYMENT_WHERE}")
        elif re.fullmatch(_KEY, key):
            problems.append(f"{key!r} is a config key, not a trigger setting: {_where(key)}")
        else:
            problems.append(f"{key!r} is not a setting of this DAG")
    if problems:
        allowed = ", ".join(TRIGGER_PARAMS)
        raise TriggerRefused(f"trigger refused, nothing was run: {'; '.join(problems)}. A trigger may set: {allowed}.")


def _where(key: str) -> str:
    if run_settable(key):
        return "give it in config_overrides as a KEY VALUE line"
    return f"a deployment setting, only read from {DEPLOYMENT_WHERE}"


def check_run_keys(pairs: Iterable[tuple[str, Any]], source: str) -> None:
    """Refuse config keys that are not on the run-settable allow-list, naming each and where it belongs."""
    bad = sorted({k for k, _ in pairs if not run_settable(k)})
    if bad:
        raise TriggerRefused(
            f"{source}: "
            + "; ".join(f"{k} is {_describe(k)}" for k in bad)
            + ". A trigger may set: "
            + ", ".join(RUN_SETTABLE_KEYS)
            + "."
        )


def _describe(key: str) -> str:
    from .config import get_defaults, select

    try:
        select(get_defaults(), key)
    except ConfigError:
        return "not a config key"
    return f"a deployment setting, only read from {DEPLOYMENT_WHERE}"


def check_run_values(cfg: Any, deployment: Any) -> None:
    """Bounds a trigger's run settings must keep (beyond what ``load_config`` validates)."""
    from .config import select

    problems = []
    soc = cfg.VALIDATION.ASCEND.SOC_VERSION
    if soc not in SOC_VERSIONS:
        problems.append(f"VALIDATION.ASCEND.SOC_VERSION {soc!r} is not one of {list(SOC_VERSIONS)}")
    allowed_devices = [int(d) for d in deployment.VALIDATION.ASCEND.DEVICE_IDS]
    devices = [int(d) for d in cfg.VALIDATION.ASCEND.DEVICE_IDS]
    if not devices or any(d not in allowed_devices for d in devices) or len(set(devices)) != len(devices):
        problems.append(
            f"VALIDATION.ASCEND.DEVICE_IDS {devices} must be distinct ids among the deployment's {allowed_devices}"
        )
    for key in ("VALIDATION.REFERENCE.RANK1", "VALIDATION.REFERENCE.MAP"):
        value = float(select(cfg, key))
        if not (math.isfinite(value) and 0.0 <= value <= 100.0):
            problems.append(f"{key} {value} is not a percentage in 0..100")
    lo, hi = BENCH_REPEATS_RANGE
    repeats = cfg.VALIDATION.BENCH.REPEATS
    if not (isinstance(repeats, int) and lo <= repeats <= hi):
        problems.append(f"VALIDATION.BENCH.REPEATS {repeats!r} is not an integer in {lo}..{hi}")
    if problems:
        raise TriggerRefused("trigger refused: " + "; ".join(problems))


def allowed_roots(deployment: Any) -> list[Path]:
    """The deployment's VALIDATION.ALLOWED_ROOTS, realpath-resolved (default: the data dir)."""
    from .config import data_dir

    roots = [str(r) for r in deployment.VALIDATION.ALLOWED_ROOTS if str(r).strip()] or [str(data_dir(deployment))]
    return [Path(os.path.realpath(Path(r).expanduser())) for r in roots]


def confine(path: str | os.PathLike[str], roots: Sequence[Path], what: str) -> Path:
    """The realpath of ``path`` (relative paths are taken from the first root) when it lies under one of
    ``roots``; else TriggerRefused naming the path and the roots. ``..`` components are refused outright."""
    text = os.fspath(path)
    where = f"allowed roots: {', '.join(map(str, roots))} (VALIDATION.ALLOWED_ROOTS in {DEPLOYMENT_WHERE})"
    if ".." in Path(text).parts:
        raise TriggerRefused(f"{what} {text!r}: '..' is not allowed in a trigger's paths; {where}")
    candidate = Path(text).expanduser()
    if not candidate.is_absolute():
        candidate = roots[0] / candidate
    real = Path(os.path.realpath(candidate))
    if not any(real == r or real.is_relative_to(r) for r in roots):
        via = "" if str(real) == os.path.normpath(str(candidate)) else f" (resolves to {real})"
        raise TriggerRefused(f"{what} {text!r}{via} is outside the allowed roots; {where}")
    return real
