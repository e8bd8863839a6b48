"""The DAG's wiring: task ids, one group per registered target, mapping, queues, pools, retries, timeouts,
schedule, params schema."""

from __future__ import annotations

from datetime import timedelta

import pytest
from airflow.sdk.definitions.mappedoperator import MappedOperator
from airflow.sdk.exceptions import ParamValidationError

from reid_tasks.targets import get_target, target_names

from .conftest import setup_pools

GROUP_TASKS = ("plan", "convert", "benchmark", "evaluate")
ARTIFACT_STEPS = ("convert", "benchmark", "evaluate")  # in the mapped task group <target>.artifact


def tid(target: str, step: str) -> str:
    """Task id of a per-target step: plan in the target's group, the others in its mapped artifact group."""
    return f"{target}.{step}" if step == "plan" else f"{target}.artifact.{step}"


TOP_TASKS = {
    "prepare_run",
    "export_model",
    "preprocess_data",
    "reference_features",
    "record_results",
    "check_regressions",
    "publish",
    "finish",
}


def test_task_ids_and_groups(dag):
    expected = set(TOP_TASKS) | {tid(t, step) for t in target_names() for step in GROUP_TASKS}
    assert set(dag.task_ids) == expected
    assert set(dag.task_group.children) >= set(target_names())


def test_flow(dag):
    t = dag.task_dict
    assert t["prepare_run"].downstream_task_ids >= {"export_model", "preprocess_data"}
    assert "export_model" not in t["preprocess_data"].upstream_task_ids  # in parallel
    for name in target_names():
        assert t[tid(name, "convert")].upstream_task_ids >= {tid(name, "plan"), "export_model"}
        assert t[tid(name, "benchmark")].upstream_task_ids >= {tid(name, "convert"), "preprocess_data"}
        assert t[tid(name, "evaluate")].upstream_task_ids >= {tid(name, "benchmark"), "reference_features"}
        assert tid(name, "evaluate") in t["record_results"].upstream_task_ids
    assert t["check_regressions"].upstream_task_ids >= {"record_results"}
    assert t["finish"].upstream_task_ids >= {"check_regressions", "prepare_run"}
    assert t["publish"].upstream_task_ids == {"check_regressions", "export_model", "prepare_run"}


def test_fan_out_is_one_mapped_group_per_target(dag):
    from airflow.sdk.definitions.taskgroup import MappedTaskGroup

    for name in target_names():
        for step in ARTIFACT_STEPS:  # each artifact's chain depends only on its own map index upstream
            task = dag.task_dict[tid(name, step)]
            assert isinstance(task.task_group, MappedTaskGroup), f"{tid(name, step)} is not in a mapped group"
        assert not isinstance(dag.task_dict[tid(name, "plan")], MappedOperator)


def test_queues_and_pools(dag):
    pools = set(setup_pools())
    for name in target_names():
        queue = get_target(name).queue
        convert, bench = dag.task_dict[tid(name, "convert")], dag.task_dict[tid(name, "benchmark")]
        assert convert.queue == queue and bench.queue == queue
        for step in ("plan", "evaluate"):
            assert dag.task_dict[tid(name, step)].queue == "default"
        expected_pool = "cpu_bench" if queue == "default" else f"{queue}_devices"
        assert bench.pool == expected_pool
        assert bench.pool in pools, "the setup script must create every pool the DAG uses"
    assert get_target("ascend310").queue == "ascend310"
    assert dag.task_dict[tid("ascend310", "benchmark")].pool == "ascend310_devices"
    ascend_convert = tid("ascend310", "convert")
    assert ascend_convert not in [t.task_id for t in dag.tasks if t.pool != "default_pool"]  # ATC holds no device
    others = [t for t in dag.tasks if not t.task_id.endswith(".benchmark")]
    assert {t.pool for t in others} == {"default_pool"}


def test_setup_pools_one_slot_per_device():
    pools = setup_pools()
    assert pools["cpu_bench"]["slots"] == 1
    assert pools["ascend310_devices"]["slots"] == 1  # the default fleet: device 0 of one host


def test_retries_only_where_a_retry_can_help(dag):
    for task in dag.tasks:
        base = task.task_id.rsplit(".", 1)[-1]
        if base in ("convert", "benchmark"):
            assert task.retries == 2 and task.retry_exponential_backoff
            assert task.retry_policy is not None
        elif base == "record_results":
            assert task.retries == 3 and task.retry_exponential_backoff
        else:
            assert task.retries == 0, task.task_id


def test_retry_policy_fails_fast_on_input_errors(dag):
    from reid_tasks.errors import BenchmarkError, ConversionError, DeviceBusyError, PrecisionNotSupported

    policy = dag.task_dict[tid("onnxruntime", "convert")].retry_policy
    assert policy.evaluate(PrecisionNotSupported("bf16"), 1, 3).action.value == "fail"
    for exc in (ConversionError("atc"), BenchmarkError("x"), DeviceBusyError("busy")):
        assert policy.evaluate(exc, 1, 3).action.value == "default"


def test_every_task_has_an_execution_timeout(dag):
    for task in dag.tasks:
        assert isinstance(task.execution_timeout, timedelta) and task.execution_timeout.total_seconds() > 0


def test_dag_settings(dag):
    assert type(dag.timetable).__name__ == "AssetOrTimeSchedule"  # the cron, or a new checkpoint (assets)
    assert (
        "0 2 * * *" in repr(dag.timetable.timetable)
        and type(dag.timetable.timetable).__name__ == "CronTriggerTimetable"
    )
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert dag.start_date.tzinfo is not None
    assert {"reid", "validation"} <= set(dag.tags)
    assert "ReID offline-inference validation" in dag.doc_md


def test_record_and_finish_run_when_targets_are_skipped_or_artifacts_fail(dag):
    t = dag.task_dict
    assert t["record_results"].trigger_rule == "all_done"  # a failed artifact must not lose the others
    assert t["finish"].is_teardown and t["finish"].trigger_rule == "all_done_setup_success"
    assert t["check_regressions"].trigger_rule == "all_success"


def test_schedule_override(dag_module, monkeypatch):
    monkeypatch.setenv("REID_SCHEDULE", "30 1 * * 1")
    assert dag_module._schedule() == "30 1 * * 1"
    monkeypatch.setenv("REID_SCHEDULE", "none")
    assert dag_module._schedule() is None


@pytest.fixture(scope="module")
def scheduler_dag(dag):
    """The DAG as the scheduler / API see it (what validates a trigger's conf)."""
    from airflow.serialization.serialized_objects import DagSerialization

    return DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))


def validate(dag, conf: dict) -> dict:
    """What ``create_dagrun`` does with a trigger's conf (Airflow refuses the run when this raises)."""
    return dag.params.deep_merge(conf).validate()


def test_params_defaults_are_valid_and_run_the_demo(dag, scheduler_dag):
    values = validate(scheduler_dag, {})
    assert values["targets"] == ["onnxruntime"]
    assert values["batch_sizes"] == [1, 16]
    for name in ("checkpoint", "config_file", "config_overrides", "dataset_root", "notes"):
        assert values[name] is None, name
    for name, param in dag.params.items():
        assert param.schema.get("title") and param.description, name


def test_form_submits_with_defaults_and_shows_their_meaning(scheduler_dag):
    """Airflow 3.3's form marks a field required unless its type includes "null" (isParamRequired.tsx):
    every param whose default is empty is nullable, and its description says what empty means."""
    for name, param in scheduler_dag.params.items():
        types = param.schema["type"] if isinstance(param.schema["type"], list) else [param.schema["type"]]
        if param.value in (None, "", []):
            assert "null" in types, f"{name}: the form would require it"
            assert param.value is None, name
            assert "Empty:" in param.description, f"{name}: the description does not say what empty means"


def test_number_bounds_are_not_clamped_by_the_form(scheduler_dag):
    """The form's number field clamps to a top-level minimum/maximum (Reference Rank-1 150 became 100);
    the bounds live in allOf, where they only validate: 150 is refused with the reason."""
    for name in ("reference_rank1", "reference_map"):
        schema = scheduler_dag.params.get_param(name).schema
        assert "maximum" not in schema and "minimum" not in schema, name
    with pytest.raises(ParamValidationError, match="150"):
        validate(scheduler_dag, {"reference_rank1": 150})
    assert validate(scheduler_dag, {"reference_rank1": 100, "reference_map": 0})["reference_rank1"] == 100


def test_overrides_accept_key_value_lines_and_json_forms(scheduler_dag):
    """Airflow renders a multi-type param as a textarea that keeps text that is not JSON as a string."""
    schema = scheduler_dag.params.get_param("config_overrides").schema
    assert [t for t in schema["type"] if t != "null"] == ["string", "array", "object"] and "enum" not in schema
    lines = "TEST.NECK_FEAT before\n\n# speed-only export\nTEST.FEAT_NORM no\r\nVALIDATION.BATCH_SIZES [1, 4]\n"
    assert validate(scheduler_dag, {"config_overrides": lines})["config_overrides"] == lines
    validate(scheduler_dag, {"config_overrides": ["TEST.NECK_FEAT before"]})
    validate(scheduler_dag, {"config_overrides": {"TEST.NECK_FEAT": "before"}})
    from reid_tasks.settings import parse_overrides

    assert parse_overrides(lines) == [
        ("TEST.NECK_FEAT", "before"),
        ("TEST.FEAT_NORM", "no"),
        ("VALIDATION.BATCH_SIZES", "[1, 4]"),
    ]
    for bad in ("TEST.NECK_FEAT", "TEST.NECK_FEAT before\nnot a key", "rm -rf /", ["TEST.NECK_FEAT"], {"a b": 1}):
        with pytest.raises(ParamValidationError):
            validate(scheduler_dag, {"config_overrides": bad})


def test_params_accept_good_input(scheduler_dag):
    validate(
        scheduler_dag,
        {
            "targets": ["onnxruntime", "ascend310"],
            "batch_sizes": [1, 4, 256],
            "precisions": ["fp32", "int8"],
            "soc_version": "Ascend310P3",
            "device_ids": [0],
            "reference_rank1": 94.5,
            "reference_map": 85.9,
            "config_overrides": ["TEST.NECK_FEAT before"],
        },
    )
    validate(scheduler_dag, {"config_overrides": {"TEST.NECK_FEAT": "before"}})


@pytest.mark.parametrize(
    "conf",
    [
        {"batch_sizes": [0]},
        {"batch_sizes": [300]},
        {"batch_sizes": [1, 1]},
        {"batch_sizes": []},
        {"batch_sizes": ["16"]},
        {"targets": ["tpu"]},
        {"targets": []},
        {"targets": ["onnxruntime", "onnxruntime"]},
        {"precisions": ["fp8"]},
        {"soc_version": "Ascend999"},
        {"device_ids": [-1]},
        {"reference_rank1": 101},
        {"reference_rank1": 150},
        {"device_ids": [7]},
        {"reference_map": -1},
        {"config_overrides": ["TEST.NECK_FEAT"]},
        {"notes": 5},
    ],
    ids=lambda c: next(iter(c)) + "=" + repr(next(iter(c.values()))),
)
def test_params_reject_bad_input(scheduler_dag, conf):
    with pytest.raises(ParamValidationError):
        validate(scheduler_dag, conf)
