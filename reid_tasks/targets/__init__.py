"""Inference targets: a registry by name, the Target interface and its records.

    >>> from reid_tasks.targets import get_target, target_names
    >>> target_names()
    ['ascend310', 'onnxruntime', 'openvino', 'pytorch', 'pytorch-cuda']
    >>> t = get_target("onnxruntime")

Importing this package (and every target module) is cheap: no torch / onnxruntime / openvino / cv2 / onnx at
module level, so the DAG can enumerate targets while it is parsed. Target modules are imported on first
lookup. Adding a target = one module + one ``register_target`` line below.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

from reid_tasks.errors import TargetError
from reid_tasks.targets.base import Session, Target
from reid_tasks.targets.records import PRECISIONS, Artifact, BuildOutput, PerfRecord

__all__ = [
    "PRECISIONS",
    "Artifact",
    "BuildOutput",
    "PerfRecord",
    "Session",
    "Target",
    "UnknownTarget",
    "get_target",
    "register_target",
    "target_names",
]

log = logging.getLogger("reid_tasks.targets")


class UnknownTarget(TargetError, KeyError):
    """No target is registered under the requested name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


# name -> "module:Class" (imported lazily) or a factory taking cfg
_REGISTRY: dict[str, str | Callable[..., Target]] = {}


def register_target(name: str, factory: str | Callable[..., Target], *, replace: bool = False) -> None:
    """Register ``factory`` under ``name``: a ``"package.module:Class"`` string or a callable(cfg) -> Target."""
    if not name or not isinstance(name, str):
        raise TargetError(f"target name must be a non-empty string, got {name!r}")
    if name in _REGISTRY and not replace and _REGISTRY[name] != factory:
        raise TargetError(f"target {name!r} is already registered ({_REGISTRY[name]!r}); pass replace=True")
    _REGISTRY[name] = factory


def unregister_target(name: str) -> None:
    """Remove a registration (tests)."""
    _REGISTRY.pop(name, None)


def target_names() -> list[str]:
    """Names of every registered target, sorted."""
    return sorted(_REGISTRY)


def get_target(name: str, cfg: Any | None = None) -> Target:
    """The target registered as ``name``, configured with ``cfg`` (defaults when None)."""
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
    target = factory(cfg)
    if not isinstance(target, Target):
        raise TargetError(f"target {name!r}: factory returned {type(target).__name__}, not a Target")
    return target


register_target("onnxruntime", "reid_tasks.targets.onnxruntime:OnnxRuntimeTarget")
register_target("openvino", "reid_tasks.targets.openvino:OpenVinoTarget")
register_target("pytorch", "reid_tasks.targets.pytorch:PyTorchTarget")
register_target("pytorch-cuda", "reid_tasks.targets.pytorch:PyTorchCudaTarget")
register_target("ascend310", "reid_tasks.targets.ascend:AscendTarget")
