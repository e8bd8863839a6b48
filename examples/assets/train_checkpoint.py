"""
### Example: a training DAG that hands its checkpoint to the validation DAG

Stands for a real training job: it writes a checkpoint (here the deterministic demo weights, in the released
reid-strong-baseline format) and updates the `reid_checkpoint` asset with the file in the event's extra.
`reid_validation` is scheduled on that asset (beside its cron), so each new checkpoint is validated.

    REID_EXAMPLE_CHECKPOINT_DIR   where the checkpoint is written (default: <data dir>/example-checkpoints)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from airflow.sdk import Asset, dag, task

from reid_tasks.assets import CHECKPOINT_ASSET, CHECKPOINT_EXTRA_KEY

CHECKPOINT = Asset(name=CHECKPOINT_ASSET)


@task(outlets=[CHECKPOINT])
def train(**context: Any) -> str:
    """'Train' (write the demo checkpoint) and announce it on the checkpoint asset."""
    import os
    from pathlib import Path

    from reid_tasks.config import data_dir
    from reid_tasks.model import write_demo_checkpoint

    out = Path(os.environ.get("REID_EXAMPLE_CHECKPOINT_DIR") or data_dir() / "example-checkpoints")
    path = write_demo_checkpoint(out / f"resnet50_{context['run_id'].replace(':', '_')}.pth")
    context["outlet_events"][CHECKPOINT].extra = {CHECKPOINT_EXTRA_KEY: str(path)}
    return str(path)


@dag(
    dag_id="reid_example_train",
    schedule=None,
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["reid", "example"],
    doc_md=__doc__,
)
def reid_example_train() -> None:
    train()


reid_example_train()
