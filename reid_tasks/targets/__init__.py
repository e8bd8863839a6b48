"""Inference targets: plug-ins found by entry point, the Target interface and its records.

    >>> from reid_tasks.targets import get_target, target_names
    >>> target_names()
    ['ascend310', 'onnxruntime', 'openvino', 'pytorch', 'pytorch-cuda']
    >>> t = get_target("onnxruntime")

Targets are plug-ins: every distribution may declare ``name = "package.module:TargetClass"`` in the entry-point
group ``reid_validate.targets`` (this package declares its own in setup.cfg); the class brings its scheduling
(``Target.scheduling``), its config node (``Target.config_node``) and the run settings a trigger may choose
(``Target.trigger_settings``), so neither the DAG, the config module nor the trust boundary names a target.
``register_target`` adds one in-process (tests, notebooks).

Importing this package and every target module is cheap: no numpy / torch / onnxruntime / openvino / cv2 / onnx
at module level, because the DAG imports each target class while it is parsed. Target modules are imported on
first lookup.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

from reid_tasks.errors import TargetError
from reid_tasks.targets.base import Session, Target
from reid_tasks.targets.records import PRECISIONS, Artifact, BuildOutput, PerfRecord, RunSetting, Scheduling

__all__ = [
    "ENTRY_POINT_GROUP",
    "PRECISIONS",
    "Artifact",
    "BuildOutput",
    "PerfRecord",
    "RunSetting",
    "Scheduling",
    "Session",
    "Target",
    "UnknownTarget",
    "get_target",
    "register_target",
    "target_class",
    "target_names",
]

log = logging.getLogger("reid_tasks.targets")


class UnknownTarget(TargetError, KeyError):
    """No target is registered under the requested name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


#: The entry-point group a distribution declares its targets in (``name = "module:Class"``).
ENTRY_POINT_GROUP = "reid_validate.targets"

# name -> "module:Class" (imported lazily) or a factory taking cfg; filled from the entry points on first use
_REGISTRY: dict[str, str | Callable[..., Target]] = {}
_discovered = False


def _discover() -> None:
    """Register every target declared in the entry-point group, once per process."""
    global _discovered
    if _discovered:
        return
    found = _entry_points()
    if not found:
        raise TargetError(
            f"no inference target is declared in the entry-point group {ENTRY_POINT_GROUP!r}: reid-validate is "
            "not installed, or installed before its targets became entry points (pip install -e . again)"
        )
    seen: dict[str, str] = {}
    for name, value, dist in found:
        where = f"{value} ({dist})"
        if name in seen and seen[name] != where:
            raise TargetError(f"target {name!r} is declared twice: {seen[name]} and {where}")
        seen[name] = where
        _REGISTRY.setdefault(name, value)
    _discovered = True


def _entry_points() -> list[tuple[str, str, str]]:
    """(name, "module:Class", distribution) of the group, first distribution of a name on sys.path winning.

    Equivalent to ``entry_points(group=...)`` but parses only the distributions that declare the group: the DAG
    does this while it is parsed, and building every distribution's entry points costs ~4x more.
    """
    from importlib.metadata import distributions

    header = f"[{ENTRY_POINT_GROUP}]"
    out: list[tuple[str, str, str]] = []
    dists: set[str] = set()
    for dist in distributions():
        text = dist.read_text("entry_points.txt")
        if not text or header not in text:
            continue
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name not in dists:  # the same distribution found again further down sys.path
            dists.add(name)
            out += [(ep.name, ep.value, name) for ep in dist.entry_points.select(group=ENTRY_POINT_GROUP)]
    return out


def register_target(name: str, factory: str | Callable[..., Target], *, replace: bool = False) -> None:
    """Register ``factory`` under ``name``: a ``"package.module:Class"`` string or a callable(cfg) -> Target."""
    if not name or not isinstance(name, str):
        raise TargetError(f"target name must be a non-empty string, got {name!r}")
    _discover()
    if name in _REGISTRY and not replace and _REGISTRY[name] != factory:
        raise TargetError(f"target {name!r} is already registered ({_REGISTRY[name]!r}); pass replace=True")
    _REGISTRY[name] = factory


def unregister_target(name: str) -> None:
    """Remove a registration (tests)."""
    _REGISTRY.pop(name, None)


def target_names() -> list[str]:
    """Names of every registered target, sorted."""
    _discover()
    return sorted(_REGISTRY)


def target_class(name: str) -> Callable[..., Target]:
    """The class (or factory) registered as ``name``, imported on first use."""
    _discover()
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise UnknownTarget(f"unknown target {name!r}; valid targets: {', '.join(target_names())}") from None
    if isinstance(factory, str):
        module_name, _, attr = factory.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise TargetError(f"target {name!r}: cannot load {_REGISTRY[name]!r}: {exc}") from exc
    return factory


def get_target(name: str, cfg: Any | None = None) -> Target:
    """The target registered as ``name``, configured with ``cfg`` (defaults when None)."""
    target = target_class(name)(cfg)
    if not isinstance(target, Target):
        raise TargetError(f"target {name!r}: factory returned {type(target).__name__}, not a Target")
    return target


def config_nodes() -> dict[str, tuple[dict[str, Any], dict[str, tuple[Any, ...]]]]:
    """{node name under VALIDATION: (defaults, choices)} contributed by the registered target classes.

    Targets may share a node (``pytorch`` / ``pytorch-cuda``) when they declare the same defaults.
    """
    nodes: dict[str, tuple[dict[str, Any], dict[str, tuple[Any, ...]]]] = {}
    owners: dict[str, str] = {}
    for name in target_names():
        cls = target_class(name)
        node = getattr(cls, "config_node", None)
        if not node:
            continue
        declared = (dict(cls.config_defaults), {k: tuple(v) for k, v in cls.config_choices.items()})
        if node in nodes and nodes[node] != declared:
            raise TargetError(
                f"targets {owners[node]!r} and {name!r} both declare config node VALIDATION.{node} with different "
                "defaults or choices"
            )
        nodes[node], owners[node] = declared, owners.get(node, name)
    return nodes


def run_setting_declarations() -> list[tuple[str, RunSetting, type[Target]]]:
    """(full config key, declaration, declaring class) of every run setting the registered target classes declare
    (``Target.trigger_settings``), in target-name order; targets sharing a node and a declaration count once.

    TargetError names the target when a declaration has no config node or key behind it, or when two targets
    declare one trigger param for different keys.
    """
    out: list[tuple[str, RunSetting, type[Target]]] = []
    owners: dict[str, tuple[str, str, RunSetting]] = {}  # param -> (target, key, declaration)
    for name in target_names():
        cls = target_class(name)
        declared = tuple(getattr(cls, "trigger_settings", ()))
        node = getattr(cls, "config_node", None)
        for setting in declared:
            if not node or setting.key not in cls.config_defaults:
                raise TargetError(
                    f"target {name!r} declares run setting {setting.param!r} for VALIDATION.{node}.{setting.key}, "
                    f"which is not a key of its config node (config_node / config_defaults of {cls.__name__})"
                )
            key = setting.config_key(node)
            if setting.param in owners:
                other, other_key, other_setting = owners[setting.param]
                if (other_key, other_setting) != (key, setting):
                    raise TargetError(
                        f"targets {other!r} and {name!r} both declare run setting {setting.param!r}, for "
                        f"{other_key} and {key}"
                    )
                continue
            owners[setting.param] = (name, key, setting)
            out.append((key, setting, cls))
    return out
