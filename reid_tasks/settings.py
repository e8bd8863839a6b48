"""Run settings and deployment settings: what a trigger may change, and what only the deployment decides.

The trust boundary is the trigger (the Airflow form, the REST API's ``conf``, a schedule). Two kinds of
settings cross it differently:

- **Run settings** come from the trigger: the form's params (:data:`TRIGGER_PARAMS`) and config keys on the
  allow-list :data:`RUN_SETTABLE_KEYS` (in ``config_overrides`` or a trigger's config file). Both are the base
  settings below plus what every registered target declares (``Target.trigger_settings``: Ascend's SoC and
  devices), built on first use (:func:`trigger_spec`). Values are checked (enums, bounds, each target's own
  checks) and paths (checkpoint, dataset, config file) must resolve, after symlinks, under
  ``VALIDATION.ALLOWED_ROOTS``.
- **Deployment settings** are every other config key: tool paths and binaries, install paths, the results
  database, the artifacts root and data dir, ``VALIDATION.RULES.*`` / ``VALIDATION.PARITY.*``, trust of pickled
  checkpoints, the allowed roots, whether demo runs are allowed. They come only from the deployment
  configuration read on the worker at run time (:func:`deployment_config`), in this order, later wins:

      product defaults < $REID_CONFIG_FILE (yml) < Airflow Variable ``reid_deployment_config`` (yml or JSON)

  and, where those leave a value empty, the environment fallbacks ($REID_DATA_DIR, $REID_RESULTS_DB_URL,
  $REID_ARTIFACTS_ROOT, $REID_ALLOWED_ROOTS, the Airflow connection ``reid_results_db``).

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
from .run_settings import (  # noqa: F401 - part of this module's API
    BASE_FORM_KEYS,
    BASE_RUN_KEYS,
    BASE_TRIGGER_PARAMS,
    BATCH_SIZE_RANGE,
    BENCH_REPEATS_RANGE,
    TriggerSpec,
    trigger_spec,
)

#: The Airflow Variable holding deployment settings (yml or JSON text, the same keys as a config file).
DEPLOYMENT_VARIABLE = "reid_deployment_config"
#: Where a deployment setting belongs (quoted in every refusal).
DEPLOYMENT_WHERE = (
    f"the deployment configuration on the workers ($REID_CONFIG_FILE or the Airflow Variable {DEPLOYMENT_VARIABLE})"
)

#: Deployment settings that may hold credentials: never stored with a run's recorded configuration.
SECRET_KEYS = ("VALIDATION.RESULTS_DB_URL",)

#: Config keys holding a path a trigger may name; confined to the allowed roots.
PATH_KEYS = ("TEST.WEIGHT", "DATASETS.ROOT_DIR")

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


_SPEC_NAMES = {
    "RUN_SETTABLE_KEYS": "run_keys",
    "TRIGGER_PARAMS": "params",
    "FORM_KEYS": "form_keys",
    "OVERRIDE_ITEM_PATTERN": "item_pattern",
    "OVERRIDE_LINES_PATTERN": "lines_pattern",
    "OVERRIDE_KEY_PATTERN": "key_pattern",
}


def __getattr__(name: str) -> Any:
    """RUN_SETTABLE_KEYS, TRIGGER_PARAMS, FORM_KEYS, OVERRIDE_{ITEM,LINES,KEY}_PATTERN: :func:`trigger_spec`'s,
    read on first use (importing this module discovers no target)."""
    if name in _SPEC_NAMES:
        value = getattr(trigger_spec(), _SPEC_NAMES[name])
        return dict(value) if isinstance(value, dict) else value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class TriggerRefused(ConfigError):
    """A trigger carried a setting it may not set, a value out of bounds, or a path outside the allowed roots."""


def allow_list_text() -> str:
    """The allow-list as users read it (``MODEL.*`` for a whole node)."""
    return ", ".join(k + "*" if k.endswith(".") else k for k in trigger_spec().run_keys)


def run_settable(key: str) -> bool:
    """Whether config key ``key`` is on the run-settable allow-list."""
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in trigger_spec().run_keys)


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
    problems, params = [], trigger_spec().params
    for key in sorted(conf or {}):
        if key in params:
            continue
        if key in _DEPLOYMENT_PARAMS:
            problems.append(f"{key!r} is a deployment setting: {_DEPLOYMENT_PARAMS[key]} in {DEPLOYMENT_WHERE}")
        elif re.fullmatch(_KEY, key):
            problems.append(f"{key!r} is a config key, not a trigger setting: {_where(key)}")
        else:
            problems.append(f"{key!r} is not a setting of this DAG")
    if problems:
        allowed = ", ".join(params)
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
            + ", ".join(trigger_spec().run_keys)
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
    """Bounds a trigger's run settings must keep (beyond what ``load_config`` validates), each registered target
    checking its own (``Target.check_trigger_settings``, given the deployment's configuration)."""
    from .config import select

    problems = []
    for cls in trigger_spec().target_classes():
        if cls.config_node in cfg.VALIDATION:
            problems += cls.check_trigger_settings(cfg, deployment)
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
    """The deployment's VALIDATION.ALLOWED_ROOTS, else $REID_ALLOWED_ROOTS (``os.pathsep``-separated), else the
    data dir; realpath-resolved."""
    from .config import data_dir

    roots = [str(r) for r in deployment.VALIDATION.ALLOWED_ROOTS if str(r).strip()]
    roots = roots or [r for r in os.environ.get("REID_ALLOWED_ROOTS", "").split(os.pathsep) if r.strip()]
    roots = roots or [str(data_dir(deployment))]
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


# ------------------------------------------------------------------------------------------------ reading files
#: A trigger's config file larger than this is refused unread.
MAX_TRIGGER_CONFIG_BYTES = 256 * 1024


def _yaml_mapping(text: str, source: str) -> list[tuple[str, Any]]:
    """Dotted (KEY, VALUE) pairs of a yml/JSON mapping; errors give the position, never the text."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{source}: not valid YAML{at} (content not shown)") from None
    if data is None:
        return []
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f"{source}: expected a mapping of config keys, got a {kind} (content not shown)")
    pairs: list[tuple[str, Any]] = []

    def walk(node: dict, prefix: str) -> None:
        for k, v in node.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict) and v:
                walk(v, key + ".")
            else:
                pairs.append((key, v))

    walk(data, "")
    return pairs


def read_trigger_config(path: Path) -> list[tuple[str, Any]]:
    """The run settings in a trigger's config file (already confined). Keys off the allow-list are refused;
    values are checked one by one. No message shows the file's content: a key is named only when it is a
    config key, a bad value only by its key."""
    from .config import load_config, select

    source = f"config file {path}"
    if not path.is_file():
        raise TriggerRefused(f"{source}: not found or not a file")
    if path.stat().st_size > MAX_TRIGGER_CONFIG_BYTES:
        raise TriggerRefused(f"{source}: larger than {MAX_TRIGGER_CONFIG_BYTES} bytes")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TriggerRefused(f"{source}: cannot be read as UTF-8 text ({type(exc).__name__})") from None
    try:
        pairs = _yaml_mapping(text, source)
    except ConfigError as exc:
        raise TriggerRefused(str(exc)) from None
    defaults = load_config()
    unknown = 0
    for key, _ in pairs:
        try:
            select(defaults, key)
        except ConfigError:
            unknown += 1
    if unknown:
        raise TriggerRefused(f"{source}: {unknown} entr{'y is' if unknown == 1 else 'ies are'} not config keys")
    check_run_keys(pairs, source)
    for key, value in pairs:
        try:
            load_config(opts=[key, value])
        except ConfigError:
            raise TriggerRefused(f"{source}: {key} has a bad value (values from a file are not shown)") from None
    return pairs


def deployment_config(variable_text: str | None = None) -> Any:
    """The deployment configuration, read on the worker at run time: product defaults, then the yml named by
    $REID_CONFIG_FILE, then ``variable_text`` (the Airflow Variable ``reid_deployment_config``: yml or JSON,
    nested nodes or dotted keys). Every key is allowed here; the result is frozen."""
    from .config import load_config

    config_file = os.environ.get("REID_CONFIG_FILE") or None
    pairs = _yaml_mapping(variable_text, f"Airflow Variable {DEPLOYMENT_VARIABLE}") if variable_text else []
    try:
        return load_config(config_file, flat(pairs))
    except ConfigError as exc:
        origin = f"$REID_CONFIG_FILE={config_file}" if config_file else "defaults"
        if pairs:
            origin += f" + Airflow Variable {DEPLOYMENT_VARIABLE}"
        raise ConfigError(f"deployment configuration ({origin}): {exc}") from exc


def trigger_pairs(params: Mapping[str, Any], deployment: Any) -> list[tuple[str, Any]]:
    """The run settings a trigger's params ask for, as allow-listed (KEY, VALUE) pairs in merge order:
    config file, config_overrides, then the form's fields. Paths are confined to the allowed roots and
    replaced by their realpath."""
    roots = allowed_roots(deployment)
    pairs: list[tuple[str, Any]] = []
    if params.get("config_file"):
        pairs += read_trigger_config(confine(str(params["config_file"]), roots, "config_file"))
    try:
        overrides = parse_overrides(params.get("config_overrides"))
    except ConfigError as exc:
        raise TriggerRefused(str(exc)) from None
    check_run_keys(overrides, "config_overrides")
    pairs += overrides
    if params.get("checkpoint"):
        pairs.append(("TEST.WEIGHT", params["checkpoint"]))
    if params.get("dataset_root"):
        pairs.append(("DATASETS.ROOT_DIR", params["dataset_root"]))
    for name, key in trigger_spec().form_keys.items():
        value = params.get(name)
        if value not in (None, "", []):
            pairs.append((key, list(value) if isinstance(value, tuple) else value))
    confined = []
    for key, value in pairs:
        if key in PATH_KEYS and value not in (None, ""):
            what = {"TEST.WEIGHT": "checkpoint", "DATASETS.ROOT_DIR": "dataset_root"}[key]
            value = repr(str(confine(str(value), roots, f"{what} ({key})")))
        confined.append((key, value))
    return confined
