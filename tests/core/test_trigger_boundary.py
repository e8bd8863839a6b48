"""The trigger boundary (issue 10): what a trigger may set, confined paths, the deployment configuration
read on the worker, and demo vs configured runs (issue 9 section 3). Every attack is refused and nothing is
written: no run directory, no results database."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reid_tasks import steps
from reid_tasks.errors import ConfigError
from reid_tasks.settings import (
    RUN_SETTABLE_KEYS,
    TriggerRefused,
    check_run_keys,
    deployment_config,
    parse_overrides,
    run_settable,
)


@pytest.fixture
def deploy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fresh data dir (the default allowed root) and a deployment config file; returns a writer."""
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("REID_DATA_DIR", str(data))
    monkeypatch.delenv("REID_RESULTS_DB_URL", raising=False)
    monkeypatch.delenv("REID_ALLOWED_ROOTS", raising=False)
    monkeypatch.delenv("REID_ARTIFACTS_ROOT", raising=False)
    config = tmp_path / "deployment.yml"

    def write(text: str = "") -> Path:
        config.write_text(text)
        monkeypatch.setenv("REID_CONFIG_FILE", str(config))
        return data

    write()
    return write


def _written(data: Path) -> list[str]:
    return sorted(str(p.relative_to(data)) for p in data.rglob("*"))


def refused(params: dict, data: Path, *, conf: dict | None = None, match: str = "") -> str:
    before = _written(data)
    with pytest.raises(TriggerRefused) as info:
        steps.prepare_triggered_run(params, conf=params if conf is None else conf)
    assert _written(data) == before, "a refused trigger wrote files"
    message = str(info.value)
    assert match in message, message
    return message


@pytest.mark.parametrize(
    "conf, names",
    [
        ({"trust_checkpoint": True}, "VALIDATION.TRUST_CHECKPOINT"),
        ({"results_db_url": "sqlite:////tmp/elsewhere.sqlite"}, "VALIDATION.RESULTS_DB_URL"),
        ({"artifacts_root": "/tmp/x"}, "VALIDATION.ARTIFACTS_ROOT"),
        ({"VALIDATION.RULES.PERF_Z": 100.0}, "deployment setting"),
        ({"whatever": 1}, "not a setting of this DAG"),
    ],
)
def test_undeclared_conf_keys_are_refused_naming_where_they_belong(deploy, conf, names):
    data = deploy()
    message = refused(dict(conf), data, match=names)
    key = next(iter(conf))
    assert repr(key) in message and "nothing was run" in message


@pytest.mark.parametrize(
    "line",
    [
        "VALIDATION.ASCEND.BENCHMARK_BIN /bin/sh",
        "VALIDATION.ASCEND.INSTALL_PATH /tmp/evil",
        "VALIDATION.RULES.PERF_Z 100.0",
        "VALIDATION.PARITY.FP32_MAX_ABS 1.0",
        "VALIDATION.ARTIFACTS_ROOT /tmp/elsewhere",
        "VALIDATION.RESULTS_DB_URL sqlite:////tmp/x.sqlite",
        "VALIDATION.TRUST_CHECKPOINT True",
        "VALIDATION.ALLOWED_ROOTS ['/']",
        "VALIDATION.DEMO True",
    ],
)
def test_deployment_only_overrides_are_refused_in_every_form(deploy, line):
    data = deploy()
    key, _, value = line.partition(" ")
    for form in (line, [line], {key: value}, f"TEST.NECK_FEAT before\n{line}\n"):
        message = refused({"config_overrides": form}, data, match=key)
        assert "deployment setting" in message and "REID_CONFIG_FILE" in message


def test_run_settings_pass_and_are_checked(deploy, synthetic_market, demo_checkpoint):
    data = deploy()
    deploy(f"VALIDATION:\n  ALLOWED_ROOTS: ['{synthetic_market.parent}', '{data}']\n")
    base = {"dataset_root": str(synthetic_market), "checkpoint": str(demo_checkpoint)}
    refused({**base, "config_overrides": "VALIDATION.BENCH.REPEATS 0"}, data, match="VALIDATION.BENCH.REPEATS")
    refused({**base, "config_overrides": "VALIDATION.BENCH.REPEATS 1000"}, data, match="1..100")
    refused({**base, "device_ids": [3]}, data, match="among the deployment's [0]")
    refused({**base, "soc_version": "Ascend999"}, data, match="Ascend999")
    refused({**base, "reference_rank1": 150}, data, match="0..100")
    with pytest.raises(ConfigError, match=r"TEST.NECK_FEAT"):
        steps.prepare_triggered_run({**base, "config_overrides": "TEST.NECK_FEAT middle"})
    assert _written(data) == []


def test_paths_are_confined_to_the_allowed_roots(deploy, tmp_path):
    data = deploy()
    roots_named = f"allowed roots: {os.path.realpath(data)}"
    refused({"dataset_root": "/etc"}, data, match=roots_named)
    refused({"dataset_root": "../.."}, data, match="'..' is not allowed")
    refused({"checkpoint": "/etc/hostname"}, data, match="'/etc/hostname'")
    outside = tmp_path / "outside"
    outside.mkdir()
    (data / "escape").symlink_to(outside)
    message = refused({"dataset_root": str(data / "escape")}, data, match=f"resolves to {outside}")
    assert roots_named in message
    refused({"dataset_root": "escape"}, data, match="resolves to")  # relative: from the first root
    refused({"config_overrides": f"DATASETS.ROOT_DIR {outside}"}, data, match=str(outside))


def test_config_file_outside_or_unparseable_never_echoes_content(deploy):
    data = deploy()
    passwd = Path("/etc/passwd")
    message = refused({"config_file": str(passwd)}, data, match="outside the allowed roots")
    lines = [ln for ln in passwd.read_text().splitlines() if ln.strip()]
    assert lines and not any(ln in message for ln in lines)

    secret = "hunter2-" + "x" * 20
    inside = data / "bad.yml"
    inside.write_text(f"TEST:\n  NECK_FEAT: [unclosed {secret}\n")
    message = refused({"config_file": str(inside)}, data, match="not valid YAML at line")
    assert secret not in message and "content not shown" in message
    inside.write_text(f"{secret}: 1\nVALIDATION:\n  RULES:\n    PERF_Z: 100\n")
    message = refused({"config_file": str(inside)}, data, match="not config keys")
    assert secret not in message
    inside.write_text(f"root:x:0:0:{secret}:/root:/bin/bash\n")
    assert secret not in refused({"config_file": str(inside)}, data, match="expected a mapping")
    inside.write_text("VALIDATION:\n  RULES:\n    PERF_Z: 100\n")
    refused({"config_file": str(inside)}, data, match="VALIDATION.RULES.PERF_Z is a deployment setting")
    inside.write_text(f"TEST:\n  NECK_FEAT: {secret}\n")
    message = refused({"config_file": str(inside)}, data, match="TEST.NECK_FEAT has a bad value")
    assert secret not in message


def test_trigger_config_file_sets_run_settings(deploy, synthetic_market, demo_checkpoint):
    data = deploy()
    deploy(f"VALIDATION:\n  ALLOWED_ROOTS: ['{synthetic_market.parent}', '{data}']\n")
    f = data / "run.yml"
    f.write_text(
        f"TEST:\n  NECK_FEAT: before\n  WEIGHT: '{demo_checkpoint}'\nDATASETS:\n  ROOT_DIR: '{synthetic_market}'\n"
    )
    ctx = steps.prepare_triggered_run({"config_file": str(f), "notes": "via a file"}, run_key="t/file")
    cfg = steps.cfg_of(ctx)
    assert cfg.TEST.NECK_FEAT == "before"
    assert ctx["checkpoint"] == os.path.realpath(demo_checkpoint)
    assert ctx["dataset_root"] == os.path.realpath(synthetic_market)
    assert ctx["notes"] == "via a file" and ctx["trust_checkpoint"] is False


def test_deployment_configuration_precedence(deploy, monkeypatch):
    deploy("VALIDATION:\n  RULES:\n    PERF_Z: 7.0\n    PERF_LOOKBACK: 50\n  TRUST_CHECKPOINT: true\n")
    cfg = deployment_config()
    assert cfg.VALIDATION.RULES.PERF_Z == 7.0 and cfg.VALIDATION.TRUST_CHECKPOINT is True
    cfg = deployment_config('{"VALIDATION": {"RULES": {"PERF_Z": 9.0}}}')  # the Airflow Variable wins
    assert cfg.VALIDATION.RULES.PERF_Z == 9.0 and cfg.VALIDATION.RULES.PERF_LOOKBACK == 50
    with pytest.raises(ConfigError, match=r"Airflow Variable reid_deployment_config: not valid YAML"):
        deployment_config("VALIDATION: [")
    with pytest.raises(ConfigError, match=r"deployment configuration .*unknown config key"):
        deployment_config("VALIDATION:\n  NOPE: 1\n")


def test_scheduled_run_with_nothing_configured_fails_saying_what_to_configure(deploy):
    data = deploy()
    for scheduled in (True, False):
        with pytest.raises(ConfigError) as info:
            steps.prepare_triggered_run({}, scheduled=scheduled)
        message = str(info.value)
        assert "TEST.WEIGHT" in message and "DATASETS.ROOT_DIR" in message and "VALIDATION.DEMO" in message
    assert _written(data) == []


def test_dataset_without_checkpoint_never_gets_the_demo_weights(deploy, synthetic_market, demo_checkpoint):
    data = deploy()
    deploy(f"VALIDATION:\n  DEMO: true\n  ALLOWED_ROOTS: ['{synthetic_market.parent}', '{data}']\n")
    with pytest.raises(ConfigError, match=r"names a dataset .* but no checkpoint"):
        steps.prepare_triggered_run({"dataset_root": str(synthetic_market)})
    with pytest.raises(ConfigError, match=r"names a checkpoint .* but no dataset"):
        steps.prepare_triggered_run({"checkpoint": str(demo_checkpoint)})
    assert _written(data) == []


def test_scheduled_run_validates_the_deployment_configuration(deploy, synthetic_market, demo_checkpoint):
    data = deploy()
    deploy(
        f"TEST:\n  WEIGHT: '{demo_checkpoint}'\nDATASETS:\n  ROOT_DIR: '{synthetic_market}'\n"
        f"VALIDATION:\n  BATCH_SIZES: [2]\n  RULES:\n    PERF_Z: 6.0\n  RESULTS_DB_URL: 'sqlite:///{data}/r.sqlite'\n"
    )
    # a scheduled run ignores the params (they are the form's defaults) and runs what is configured
    ctx = steps.prepare_triggered_run({"batch_sizes": [1, 16], "notes": "x"}, scheduled=True, run_key="t/sched")
    assert ctx["batch_sizes"] == [2] and ctx["checkpoint"] == str(demo_checkpoint) and ctx["notes"] == ""
    assert steps.cfg_of(ctx).VALIDATION.RULES.PERF_Z == 6.0
    assert ctx["run_kind"] == "demo"  # synthetic data: never reported as a configured run
    # the recorded configuration keeps the deployment's thresholds but never a database URL's credentials
    recorded = steps.run_info(ctx).config_overrides
    assert recorded["VALIDATION.RULES.PERF_Z"] == 6.0 and "VALIDATION.RESULTS_DB_URL" not in recorded


def test_cli_keeps_every_override(deploy, synthetic_market, demo_checkpoint, tmp_path):
    deploy()
    ctx = steps.prepare_run(
        {
            "dataset_root": str(synthetic_market),
            "checkpoint": str(demo_checkpoint),
            "trust_checkpoint": True,
            "config_overrides": ["VALIDATION.RULES.PERF_Z", "100.0", "VALIDATION.ARTIFACTS_ROOT", str(tmp_path / "a")],
        },
        run_key="local/cli",
    )
    assert ctx["trust_checkpoint"] is True and steps.cfg_of(ctx).VALIDATION.RULES.PERF_Z == 100.0
    assert Path(ctx["run_dir"]).parent == (tmp_path / "a").resolve()


def test_allow_list_is_explicit():
    assert run_settable("TEST.NECK_FEAT") and run_settable("MODEL.NECK") and run_settable("VALIDATION.BENCH.REPEATS")
    for key in ("VALIDATION.BENCH.WARMUP", "VALIDATION.RULES.PERF_Z", "VALIDATION.ASCEND.RUNNER", "OUTPUT"):
        assert not run_settable(key), key
    assert all(not k.startswith(("VALIDATION.RULES", "VALIDATION.PARITY")) for k in RUN_SETTABLE_KEYS)
    with pytest.raises(TriggerRefused, match=r"NOPE.KEY is not a config key"):
        check_run_keys([("NOPE.KEY", 1)], "config_overrides")
    assert parse_overrides(["TEST.NECK_FEAT", "before", "TEST.FEAT_NORM no"]) == [
        ("TEST.NECK_FEAT", "before"),
        ("TEST.FEAT_NORM", "no"),
    ]


def test_demo_run_only_where_the_deployment_allows_it(deploy):
    data = deploy()
    deploy("VALIDATION:\n  DEMO: true\n")
    ctx = steps.prepare_triggered_run({"notes": None, "config_overrides": None}, run_key="t/demo")
    demo = data / "demo"
    assert ctx["run_kind"] == "demo"
    from reid_tasks.results import ResultsStore

    [run] = [r for r in ResultsStore.open(None).runs() if r.run_key == "t/demo"]
    assert run.kind == "demo"  # recorded as a demo run
    assert ctx["dataset_root"] == str(demo / "market1501") and ctx["checkpoint"] == str(
        demo / "demo_resnet50_bnneck.pth"
    )
    # the demo dataset named explicitly gets its demo checkpoint; a checkpoint-less real dataset never does
    ctx = steps.prepare_triggered_run({"dataset_root": str(demo / "market1501")}, run_key="t/demo2")
    assert ctx["checkpoint"] == str(demo / "demo_resnet50_bnneck.pth") and ctx["run_kind"] == "demo"
