"""
### ReID validation storage maintenance

Daily: `reid-validate gc` with the deployment's retention policy (`VALIDATION.RETENTION.KEEP_DAYS`,
`KEEP_RUNS`, `STALE_HOURS` from `$REID_CONFIG_FILE`). Deletes run directories outside the policy and the tensor
caches and seed layouts no kept run uses; never a run in progress, never a database row. The task's log and
return value list what was freed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import dag, task


@dag(
    dag_id="reid_maintenance",
    schedule="@daily",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["reid", "maintenance"],
    doc_md=__doc__,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=10)},
)
def reid_maintenance() -> None:
    @task(execution_timeout=timedelta(hours=1))
    def collect_garbage() -> dict[str, Any]:
        """Apply VALIDATION.RETENTION under VALIDATION.ARTIFACTS_ROOT (each deletion is logged)."""
        import os

        from reid_tasks.config import artifacts_root, load_config
        from reid_tasks.retention import Policy, collect

        cfg = load_config(os.environ.get("REID_CONFIG_FILE") or None)
        report = collect(artifacts_root(cfg), Policy.from_cfg(cfg))
        return {"root": report.root, "freed_bytes": report.freed_bytes, "deleted": len(report.deleted)}

    collect_garbage()


maintenance_dag = reid_maintenance()
