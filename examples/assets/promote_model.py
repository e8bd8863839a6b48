"""
### Example: a promotion DAG scheduled on validated models

`reid_validation` emits, on every passing run, an event for the validated model's asset through the
`reid_validated_models` alias (extra: run key, checkpoint path and sha256, ONNX sha256, targets). This DAG
runs on each such event and "promotes" the model: here it appends the event to a promotions file; a real one
would copy the checkpoint to the serving store or open a deployment.

    REID_EXAMPLE_PROMOTIONS   the JSON-lines file promotions are appended to (default: <data dir>/promotions.jsonl)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from airflow.sdk import AssetAlias, dag, task

from reid_tasks.assets import VALIDATED_MODELS_ALIAS

VALIDATED_MODELS = AssetAlias(name=VALIDATED_MODELS_ALIAS)


@task
def promote(**context: Any) -> list[dict]:
    """Record every validated model that triggered this run."""
    import json
    import os
    from pathlib import Path

    from reid_tasks.config import data_dir

    promoted = [
        {"asset": asset.uri, **dict(event.extra or {})}
        for asset, events in context["triggering_asset_events"].items()
        for event in events
    ]
    out = Path(os.environ.get("REID_EXAMPLE_PROMOTIONS") or data_dir() / "promotions.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as f:
        f.writelines(json.dumps(p, sort_keys=True) + "\n" for p in promoted)
    return promoted


@dag(
    dag_id="reid_example_promote",
    schedule=[VALIDATED_MODELS],
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["reid", "example"],
    doc_md=__doc__,
)
def reid_example_promote() -> None:
    promote()


reid_example_promote()
