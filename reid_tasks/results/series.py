"""What a series is: the plain dict that names one history (perf or accuracy) and its readable key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def perf_series(target: str, device_kind: str, batch_size: int, precision: str, mode: str) -> dict[str, Any]:
    return {
        "kind": "perf",
        "target": target,
        "device_kind": device_kind,
        "batch_size": int(batch_size),
        "precision": precision,
        "mode": mode,
    }


def accuracy_series(target: str, batch_size: int, precision: str, re_ranking: bool) -> dict[str, Any]:
    return {
        "kind": "accuracy",
        "target": target,
        "batch_size": int(batch_size),
        "precision": precision,
        "re_ranking": bool(re_ranking),
    }


def series_key(series: Mapping[str, Any]) -> str:
    """Readable, unique text form: ``onnxruntime/cpu/bs16/fp32/real`` or ``onnxruntime/bs16/fp32[/rerank]``."""
    if series["kind"] == "perf":
        return (
            f"{series['target']}/{series['device_kind']}/bs{series['batch_size']}/"
            f"{series['precision']}/{series['mode']}"
        )
    return f"{series['target']}/bs{series['batch_size']}/{series['precision']}" + (
        "/rerank" if series["re_ranking"] else ""
    )
