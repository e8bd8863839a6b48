"""
### ReID offline-inference validation

Validates the reid-strong-baseline person re-identification model (ResNet50 + BN neck, Market-1501)
on every registered inference target, nightly, on demand, and whenever a training DAG updates the
`reid_checkpoint` asset (the event's extra `checkpoint` names the file):

1. **prepare_run**: refuse a trigger that sets anything but run settings (allow-list in
   `reid_tasks.settings`); read the deployment configuration on the worker (`$REID_CONFIG_FILE`, then the
   Airflow Variable `reid_deployment_config`); resolve dataset and checkpoint (the synthetic set and demo
   checkpoint only together, only where `VALIDATION.DEMO` allows), create the run directory, record the run.
2. **export_model** (checkpoint -> ONNX, parity-checked) and, in parallel, **preprocess_data**
   (images -> tensor cache).
3. One task group per target (`onnxruntime`, `ascend310`, ...): **plan** the (batch size, precision)
   combinations (the group is skipped when the target is not chosen), **convert** one artifact per
   combination and **benchmark** it on the target's own queue (Ascend: queue `ascend310`, pool
   `ascend310_devices` with a slot per device; the worker leases a free device), then **evaluate**
   Rank-k / mAP and parity.
4. **record_results** into the results database, **check_regressions** against the reference metrics
   and the history (fails the run and notifies when a rule fires), **publish** (a passing run) emits the
   validated model's asset through the `reid_validated_models` alias for promotion DAGs, **finish** marks
   the run's status.

Artifacts live in a per-run directory under `VALIDATION.ARTIFACTS_ROOT` (storage every worker sees);
XCom only carries small JSON records. Results: `reid-validate results`, or the **ReID validation** page.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import (
    Asset,
    AssetAlias,
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    ExceptionRetryPolicy,
    Param,
    RetryAction,
    RetryRule,
    TaskGroup,
    dag,
    task,
    task_group,
)

from reid_tasks.assets import CHECKPOINT_ASSET, CHECKPOINT_EXTRA_KEY, VALIDATED_MODELS_ALIAS
from reid_tasks.config import load_config
from reid_tasks.form import trigger_form
from reid_tasks.targets import get_target, target_names

CFG = load_config(os.environ.get("REID_CONFIG_FILE") or None)
TARGETS = list(target_names())
log = logging.getLogger("airflow.task")  # the task logger: lines land in the task's log
CHECKPOINT = Asset(name=CHECKPOINT_ASSET)  # a training DAG updates it: a run validates the new checkpoint
VALIDATED_MODELS = AssetAlias(name=VALIDATED_MODELS_ALIAS)  # one asset per validated model, emitted on success

# Tool flakiness (ATC, a busy device, a database hiccup) can pass on retry; a wrong input cannot.
NOT_RETRYABLE = ExceptionRetryPolicy(
    rules=[
        RetryRule(
            exception=[
                "reid_tasks.errors.ConfigError",
                "reid_tasks.errors.CheckpointError",
                "reid_tasks.errors.DatasetError",
                "reid_tasks.errors.TargetUnavailable",
                "reid_tasks.errors.PrecisionNotSupported",
            ],
            action=RetryAction.FAIL,
            reason="input or environment error: a retry cannot help",
        )
    ]
)
TOOL_RETRIES: dict[str, Any] = {
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=10),
    "retry_policy": NOT_RETRYABLE,
}
DB_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay": timedelta(seconds=10),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=2),
}


def benchmark_pool(target_name: str) -> str:
    """The Airflow pool a target's benchmarks take, as the target declares it (``Target.scheduling``)."""
    return get_target(target_name, CFG).scheduling().pool


def _schedule() -> str | None:
    """Cron from VALIDATION.SCHEDULE; $REID_SCHEDULE overrides ("none": no cron)."""
    value = os.environ.get("REID_SCHEDULE") or CFG.VALIDATION.SCHEDULE
    return None if not value or value.strip().lower() in ("none", "null", "off") else value.strip()


def _timetable() -> Any:
    """The cron, or an update of the checkpoint asset, whichever comes first (the asset alone without a cron)."""
    cron = _schedule()
    if cron is None:
        return [CHECKPOINT]
    return AssetOrTimeSchedule(timetable=CronTriggerTimetable(cron, timezone="UTC"), assets=[CHECKPOINT])


def _asset_params(context: Any) -> dict[str, str]:
    """The checkpoint named by the latest checkpoint-asset event that triggered this run ({} otherwise)."""
    events = context.get("triggering_asset_events")
    if not events:
        return {}
    try:
        latest = list(events[CHECKPOINT])[-1]
    except (KeyError, IndexError):
        return {}
    checkpoint = (latest.extra or {}).get(CHECKPOINT_EXTRA_KEY)
    return {"checkpoint": str(checkpoint)} if checkpoint else {}


def _run_identity(context: Any) -> dict[str, str]:
    dag_run = context["dag_run"]
    run_type = str(getattr(dag_run.run_type, "value", dag_run.run_type))
    from urllib.parse import quote

    from airflow.sdk import conf

    base_url = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
    return {
        "run_key": f"{dag_run.dag_id}/{dag_run.run_id}",
        "trigger": "scheduled" if run_type in ("scheduled", "asset_triggered") else "manual",
        "dag_id": dag_run.dag_id,
        "run_id": dag_run.run_id,
        "airflow_url": f"{base_url}/dags/{quote(dag_run.dag_id, safe='')}/runs/{quote(dag_run.run_id, safe='')}"
        if base_url
        else None,
    }


@task(execution_timeout=timedelta(minutes=30))
def prepare_run(**context: Any) -> dict:
    """Refuse a trigger that sets what it may not; resolve the deployment configuration (read here, on the
    worker) and the run settings, dataset, checkpoint and run directory; record the run as running."""
    from airflow.sdk import Variable

    from reid_tasks import steps
    from reid_tasks.settings import DEPLOYMENT_VARIABLE

    params, identity = context["params"], _run_identity(context)
    from_asset = _asset_params(context)  # a training DAG's checkpoint: a run setting, checked like a trigger's
    return steps.prepare_triggered_run(
        {k: params[k] for k in params} | from_asset,  # Airflow merged the conf into them, undeclared keys included
        conf=context["dag_run"].conf or {},
        scheduled=identity["trigger"] == "scheduled" and not from_asset,
        deployment_text=Variable.get(DEPLOYMENT_VARIABLE, default=None),
        **identity,
    )


@task(execution_timeout=timedelta(minutes=30))
def export_model(ctx: dict) -> dict:
    """Checkpoint -> ONNX (opset from config) with its parity report."""
    from reid_tasks import steps

    return steps.export_model(ctx)


@task(execution_timeout=timedelta(hours=1))
def preprocess_data(ctx: dict) -> dict:
    """Query + gallery images -> tensor cache in the run directory."""
    from reid_tasks import steps

    return steps.preprocess_data(ctx)


@task(execution_timeout=timedelta(minutes=30))
def reference_features(ctx: dict, data: dict) -> dict:
    """PyTorch fp32 eager features: the parity reference of every artifact."""
    from reid_tasks import steps

    return steps.reference_features(ctx, data)


@task(execution_timeout=timedelta(minutes=5))
def plan(ctx: dict, target: str) -> list[dict]:
    """The (batch size, precision) combinations of one target; skips the group when it is not chosen."""
    from airflow.sdk.exceptions import AirflowSkipException

    if target not in ctx["targets"]:
        raise AirflowSkipException(f"target {target} not chosen (targets: {', '.join(ctx['targets'])})")
    from reid_tasks import steps

    combos = steps.plan_combinations(ctx, target)
    return [{"target": c["target"], "batch_size": c["batch_size"], "precision": c["precision"]} for c in combos]


# convert / benchmark / evaluate write a failed artifact's error into the run directory (steps.capture_failure)
# before failing; record_results turns it into the artifact's failure row.
@task(execution_timeout=timedelta(hours=2), **TOOL_RETRIES)
def convert(ctx: dict, export: dict, target: str, batch_size: int, precision: str, **context: Any) -> dict:
    """One artifact for (target, batch size, precision), e.g. ATC -> .om."""
    from reid_tasks import steps

    combo = {"target": target, "batch_size": batch_size, "precision": precision}
    with steps.capture_failure(ctx, "convert", combo, context["ti"].try_number):
        return steps.convert_artifact(ctx, export, target, batch_size, precision)


@task(execution_timeout=timedelta(seconds=float(CFG.VALIDATION.BENCH.TASK_TIMEOUT_S)), **TOOL_RETRIES)
def benchmark(ctx: dict, artifact: dict, data: dict, **context: Any) -> dict:
    """On the target's worker, on a leased device: the pure-inference benchmark, then one pass over the data
    (features + end-to-end perf), refused up front when it cannot fit this task's timeout."""
    from reid_tasks import steps

    with steps.capture_failure(ctx, "benchmark", artifact, context["ti"].try_number):
        return steps.benchmark_artifact(ctx, artifact, data)


@task(execution_timeout=timedelta(minutes=30))
def evaluate(ctx: dict, bench: dict, data: dict, reference: dict, **context: Any) -> dict:
    """Rank-k / mAP / mINP in percent and the parity gate against the PyTorch fp32 reference."""
    from reid_tasks import steps

    with steps.capture_failure(ctx, "evaluate", bench["artifact"], context["ti"].try_number):
        return steps.evaluate_artifact(ctx, bench, data, reference)


def artifact_group(name: str) -> Any:
    """convert -> benchmark -> evaluate of one artifact, as a task group mapped over the target's combinations:
    each artifact's chain depends only on its own map index upstream, so one failed artifact leaves the others
    running (a plain mapped-over-mapped expand would mark every sibling upstream_failed)."""
    queue = get_target(name, CFG).scheduling().queue

    @task_group(group_id="artifact", tooltip=f"one {name} artifact per (batch size, precision)")
    def artifact(ctx: dict, export: dict, data: dict, reference: dict, target: str, batch_size: int, precision: str):
        art = convert.override(queue=queue)(ctx, export, target, batch_size, precision)
        bench = benchmark.override(queue=queue, pool=benchmark_pool(name))(ctx, art, data)
        return evaluate(ctx, bench, data, reference)

    return artifact


@task(trigger_rule="all_done", execution_timeout=timedelta(minutes=10), **DB_RETRIES)
def record_results(ctx: dict | None, evaluated: list, export: dict | None, data: dict | None) -> dict:
    """Upsert the run, every finished artifact's perf and accuracy rows and a failure row per failed artifact
    (runs whatever failed upstream; targets not chosen contribute nothing)."""
    from airflow.sdk.exceptions import AirflowSkipException

    from reid_tasks import steps

    if not ctx:
        raise AirflowSkipException("prepare_run failed: there is no run to record")
    results = []
    for per_target in evaluated or []:  # None: target skipped; a dict when its mapped group ran one artifact
        results += [per_target] if isinstance(per_target, dict) else [e for e in per_target or [] if e]
    return steps.record_results(ctx, results, export, data)


@task(execution_timeout=timedelta(minutes=10))
def check_regressions(ctx: dict, recorded: dict, **context: Any) -> dict:
    """Apply the regression rules to the run; on alerts notify, then fail so the run is red."""
    from airflow.sdk.exceptions import AirflowFailException

    from plugins.reid_notify import AlertNotifier
    from reid_tasks import steps

    log.info("recorded: %s", recorded)
    verdict = steps.check_regressions(ctx)
    failed = [
        f"{f['target']} bs{f['batch_size']} {f['precision']} failed at {f['stage']}: {f['message']}"
        for f in recorded.get("failures") or []
    ]
    alerts = verdict.get("alerts") or []
    no_verdict = [f"no verdict: {v['message']}" for v in verdict.get("verdicts") or [] if v.get("regressed") is None]
    for line in verdict["summary"]:  # RunVerdict.summary_lines(): alerts, no-verdict lines, a count
        log.info("%s", line)
    context["ti"].xcom_push(key="alert_count", value=len(alerts))
    if alerts:
        AlertNotifier(run_key=ctx["run_key"], alerts=alerts, summary=no_verdict, url=ctx.get("airflow_url") or "")(
            context
        )
        raise AirflowFailException(
            f"{len(alerts)} regression alert(s): " + "; ".join(str(a.get("message")) for a in alerts + failed)
        )
    if failed:
        raise AirflowFailException(f"{len(failed)} artifact(s) failed: " + "; ".join(failed))
    checks = sum(1 for v in verdict.get("verdicts") or [] if v.get("regressed") is False)
    return {"run_key": ctx["run_key"], "alerts": 0, "checks_passed": checks, "no_verdict": no_verdict}


@task(outlets=[VALIDATED_MODELS], execution_timeout=timedelta(minutes=5))
def publish(ctx: dict, export: dict, verdict: dict, **context: Any) -> dict:
    """The run passed: an event for the validated model's asset, through the alias promotion DAGs watch."""
    from reid_tasks.assets import validated_model_name, validated_model_uri

    sha = str(export["checkpoint_sha256"])
    model = Asset(name=validated_model_name(sha), uri=validated_model_uri(sha))
    extra = {
        "run_key": ctx["run_key"],
        "checkpoint": ctx["checkpoint"],
        "checkpoint_sha256": sha,
        "onnx_sha256": export.get("onnx_sha256"),
        "targets": list(ctx["targets"]),
        "checks_passed": verdict.get("checks_passed"),
    }
    context["outlet_events"][VALIDATED_MODELS].add(model, extra=extra)
    log.info("validated model %s (%s)", model.name, model.uri)
    return {"asset": model.uri, **extra}


@task(execution_timeout=timedelta(minutes=5))
def finish(ctx: dict | None, **context: Any) -> str:
    """Mark the run finished in the results database, whatever happened upstream: 'failed' when a step
    failed, else 'success' (stored as 'regressed' while the run has open alerts)."""
    from reid_tasks import steps

    if not ctx:  # prepare_run failed: nothing was recorded to finish
        return "failed"
    alert_count = context["ti"].xcom_pull(task_ids="check_regressions", key="alert_count")
    recorded = context["ti"].xcom_pull(task_ids="record_results") or {}
    # a failed artifact makes the run 'failed', or 'regressed' when alerts fire too (finish_run maps 'success')
    status = "failed" if alert_count is None or (recorded.get("failures") and not alert_count) else "success"
    steps.finish_run(ctx, status)
    return "regressed" if alert_count else status


@dag(
    dag_id="reid_validation",
    schedule=_timetable(),
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["reid", "validation", "onnx"],
    doc_md=__doc__,
    default_args={"owner": "reid", "retries": 0, "execution_timeout": timedelta(hours=2)},
)
def reid_validation() -> None:
    ctx = prepare_run()
    onnx = export_model(ctx)
    data = preprocess_data(ctx)
    reference = reference_features(ctx, data)

    evaluated = []
    for name in TARGETS:
        queue = get_target(name, CFG).scheduling().queue
        with TaskGroup(group_id=name, tooltip=f"{name} on queue {queue}"):
            artifacts = artifact_group(name).partial(ctx=ctx, export=onnx, data=data, reference=reference)
            evaluated.append(artifacts.expand_kwargs(plan(ctx, name)))

    verdict = check_regressions(ctx, record_results(ctx, evaluated, onnx, data))
    publish(ctx, onnx, verdict)
    verdict >> finish(ctx).as_teardown()


reid_validation_dag = reid_validation()
# The trigger form (reid_tasks.form: the DAG's params and each target's declared run settings) is attached once
# the tasks exist: Airflow deep-copies a DAG's params into every task created under it (28 tasks here), which
# would be most of this file's parse time. Tasks read them from the DAG at run time (dag.params merged with the
# run's conf), so nothing else changes.
reid_validation_dag.params.update({name: Param(**spec) for name, spec in trigger_form(CFG).items()})
