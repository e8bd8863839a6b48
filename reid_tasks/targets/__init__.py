"""Inference targets: plug-ins found by entry point, the Target interface and its records.

    >>> from reid_tasks.targets import get_target, target_names
    >>> target_names()
    ['ascend310', 'onnxruntime', 'openvino', 'pytorch', 'pytorch-cuda']
    >>> t = get_target("onnxruntime")

Targets are plug-ins: every distribution may declare ``name = "package.module:TargetClass"`` in the entry-point
group ``reid_validate.targets`` (this package declares its own in setup.cfg); the class brings its scheduling
(``Target.scheduling``) and its config node (``Target.config_node``), so neither the DAG nor the config module
names a target. ``register_target`` adds one in-process (tests, notebooks).

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
from reid_tasks.targets.records import PRECISIONS, Artifact, BuildOutput, PerfRecord, Scheduling

__all__ = [
    "ENTRY_POINT_GROUP",
    "PRECISIONS",
    "Artifact",
    "BuildOutput",
    "PerfRecord",
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
