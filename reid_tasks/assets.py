"""The names of the Airflow Assets the validation DAG consumes and produces (no Airflow import here).

- ``CHECKPOINT_ASSET``: a training DAG updates it when it writes a checkpoint, with the event's extra
  ``{"checkpoint": "/path/to/model.pth"}``; the validation DAG is scheduled on it (beside its cron) and
  validates that checkpoint.
- ``VALIDATED_MODELS_ALIAS``: on a passing run the DAG emits, through this alias, an event for the asset of
  the validated model (``validated_model_uri(sha256 of the checkpoint)``), with the run's key and digests in
  its extra; a promotion or deployment DAG is scheduled on the alias (or on one model's asset).
"""

from __future__ import annotations

CHECKPOINT_ASSET = "reid_checkpoint"
VALIDATED_MODELS_ALIAS = "reid_validated_models"
#: the key of a checkpoint asset event's extra that names the checkpoint file
CHECKPOINT_EXTRA_KEY = "checkpoint"


def validated_model_uri(checkpoint_sha256: str) -> str:
    """URI of the asset standing for one validated model (by its checkpoint digest)."""
    if len(checkpoint_sha256) != 64 or any(c not in "0123456789abcdef" for c in checkpoint_sha256):
        raise ValueError(f"checkpoint sha256 must be 64 lower-case hex digits, got {checkpoint_sha256!r}")
    return f"reid-validate://validated-model/{checkpoint_sha256}"


def validated_model_name(checkpoint_sha256: str) -> str:
    """Name of that asset as the Airflow UI lists it."""
    return f"reid_validated_model_{checkpoint_sha256[:16]}"
