"""What a series is: the plain dict that names one history (perf or accuracy), its readable key, and the
identity that makes two rows comparable.

A series is (target, device kind, batch, precision, mode) for perf and (target, batch, precision, re-ranking)
for accuracy, *and* an identity: what was measured (model sha256, dataset fingerprint, evaluation config
neck_feat / feat_norm) and, for perf, where (the benchmark worker's hardware; the target's tool versions are
recorded beside it). ``identity_key`` folds it into one digest; rows recorded before it existed have
``UNKNOWN_IDENTITY`` and are never a baseline.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..utils import json_digest

UNKNOWN_IDENTITY = "unknown"


def dataset_digest(fingerprint: Mapping[str, Any] | None) -> str | None:
    """The dataset part of an identity: the fingerprint's sha256 (``Market1501.fingerprint``), else a digest of
    the whole fingerprint; None when there is none."""
    if not fingerprint:
        return None
    return str(fingerprint.get("sha256") or json_digest(dict(fingerprint)))


def identity_key(
    *,
    model_sha256: str | None,
    dataset_fingerprint: str | None,
    neck_feat: str | None,
    feat_norm: bool | None,
    hardware_key: str | None = None,
) -> str:
    """The digest naming what a row measured and, for perf rows (``hardware_key``), on what machine; accuracy
    rows pass no hardware (accuracy does not depend on the machine). Never equal to UNKNOWN_IDENTITY.

    Tool versions are stored with each perf row but are not part of the key: a tool upgrade is one of the
    changes the rules exist to catch (it shows in the alert's "what changed"), not a different series.
    """
    return json_digest(
        {
            "model_sha256": model_sha256,
            "dataset_fingerprint": dataset_fingerprint,
            "neck_feat": neck_feat,
            "feat_norm": feat_norm,
            "hardware_key": hardware_key,
        }
    )


def perf_series(
    target: str, device_kind: str, batch_size: int, precision: str, mode: str, identity: str | None = None
) -> dict[str, Any]:
    """A perf series; ``identity`` None: any identity (what a caller that names no identity gets)."""
    return {
        "kind": "perf",
        "target": target,
        "device_kind": device_kind,
        "batch_size": int(batch_size),
        "precision": precision,
        "mode": mode,
        "identity_key": identity,
    }


def accuracy_series(
    target: str, batch_size: int, precision: str, re_ranking: bool, identity: str | None = None
) -> dict[str, Any]:
    """An accuracy series; ``identity`` as in perf_series."""
    return {
        "kind": "accuracy",
        "target": target,
        "batch_size": int(batch_size),
        "precision": precision,
        "re_ranking": bool(re_ranking),
        "identity_key": identity,
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
