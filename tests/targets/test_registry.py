"""Registry, records, precision vocabulary, plan, cheap imports."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any, ClassVar

import pytest

from reid_tasks.errors import PrecisionNotSupported, TargetError, TargetUnavailable
from reid_tasks.targets import (
    Artifact,
    PerfRecord,
    RunSetting,
    Target,
    UnknownTarget,
    get_target,
    register_target,
    target_names,
)
from reid_tasks.targets import unregister_target as _unregister
from reid_tasks.utils import cpu_flags

BUILTIN = ["ascend310", "onnxruntime", "openvino", "pytorch", "pytorch-cuda"]


def test_builtin_names_and_queues() -> None:
    assert set(BUILTIN) <= set(target_names())
    assert target_names() == sorted(target_names())
    assert get_target("onnxruntime").queue == "default"
    assert get_target("openvino").queue == "default"
    assert get_target("pytorch").device_kind == "cpu"


def test_unknown_target_lists_valid_names() -> None:
    with pytest.raises(UnknownTarget) as exc:
        get_target("tensorrtt")
    msg = str(exc.value)
    assert "'tensorrtt'" in msg
    for name in BUILTIN:
        assert name in msg
    assert isinstance(exc.value, TargetError)


def test_register_target_and_conflicts() -> None:
    class Dummy(Target):
        name = "dummy-x"

        def available(self) -> tuple[bool, str]:
            return False, "never here"

    register_target("dummy-x", Dummy)
    try:
        t = get_target("dummy-x")
        assert isinstance(t, Dummy) and "dummy-x" in target_names()
        assert t.describe() == {
            "name": "dummy-x",
            "queue": "default",
            "pool": "cpu_bench",
            "device_kind": "cpu",
            "available": False,
            "reason": "never here",
            "precisions": [],
            "all_precisions": ["fp32"],
        }
        with pytest.raises(TargetError, match="already registered"):
            register_target("dummy-x", "some.module:Other")
        with pytest.raises(TargetUnavailable, match="never here"):
            t.convert("x.onnx", 1, "fp32", "out")
    finally:
        _unregister("dummy-x")
    register_target("dummy-y", "reid_tasks.no_such_module:Nope")
    try:
        with pytest.raises(TargetError, match="cannot load"):
            get_target("dummy-y")
    finally:
        _unregister("dummy-y")


def test_records_round_trip() -> None:
    art = Artifact(
        target="onnxruntime",
        path="/a/model.onnx",
        sha256="ab" * 32,
        batch_size=16,
        precision="int8",
        build_seconds=1.5,
        command="quantize_static(...)",
        tool_versions={"onnxruntime": "1.32.0"},
        build_log="/a/build.log",
        calibration={"num_images": 64, "split": "query"},
        extra={"input_shape": [16, 3, 256, 128]},
    )
    d = json.loads(json.dumps(art.to_dict()))
    assert Artifact.from_dict(d) == art
    perf = PerfRecord(
        target="onnxruntime",
        samples=100,
        batch_size=16,
        warmup=2,
        repeats=3,
        throughput_best=40.0,
        throughput_median=38.0,
        latency_ms_mean=400.0,
        latency_ms_p50=399.0,
        latency_ms_p90=410.0,
        latency_ms_p99=420.0,
        e2e_throughput=35.0,
        device_kind="cpu",
        device_id=0,
        tool_versions={"onnxruntime": "1.32.0"},
        mode="real",
        card_throughput=None,
        precision="fp32",
        extra={"providers": ["CPUExecutionProvider"]},
    )
    assert PerfRecord.from_dict(json.loads(json.dumps(perf.to_dict()))) == perf
    with pytest.raises(TargetError, match=r"unknown keys \['bogus'\]"):
        PerfRecord.from_dict({**perf.to_dict(), "bogus": 1})
    with pytest.raises(TargetError, match=r"missing keys.*sha256"):
        Artifact.from_dict({k: v for k, v in art.to_dict().items() if k != "sha256"})


def test_unsupported_precision_names_target_and_list(tiny_onnx, tmp_path) -> None:
    ort = get_target("onnxruntime")
    with pytest.raises(PrecisionNotSupported) as exc:
        ort.convert(tiny_onnx, 4, "bf16", tmp_path)
    assert "'onnxruntime'" in str(exc.value) and "'bf16'" in str(exc.value) and "['fp32', 'int8']" in str(exc.value)
    with pytest.raises(PrecisionNotSupported, match="vocabulary"):
        ort.convert(tiny_onnx, 4, "fp64", tmp_path)
    with pytest.raises(PrecisionNotSupported, match=r"'openvino'.*'fp16'"):
        get_target("openvino").convert(tiny_onnx, 4, "fp16", tmp_path)
    assert not any(tmp_path.iterdir())


def test_plan_drops_what_a_target_cannot_do() -> None:
    from reid_tasks.steps import plan_combinations

    ctx = {"targets": ["onnxruntime", "openvino"], "batch_sizes": [1, 16], "precisions": ["fp32", "bf16", "int8"]}
    keep = [(c["target"], c["batch_size"], c["precision"]) for c in plan_combinations(ctx)]
    assert ("onnxruntime", 1, "fp32") in keep and ("onnxruntime", 16, "int8") in keep
    assert not any(t == "onnxruntime" and p == "bf16" for t, _, p in keep)
    has_bf16 = bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
    assert (("openvino", 16, "bf16") in keep) == has_bf16
    assert plan_combinations({**ctx, "targets": ["onnxruntime"], "precisions": ["fp16"]}) == []
    assert plan_combinations(ctx, "pytorch") == []  # not chosen


def test_pytorch_cuda_unavailable_without_gpu(tmp_path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    t = get_target("pytorch-cuda")
    ok, reason = t.available()
    assert not ok and "CUDA" in reason
    assert t.device_kind == "cuda" and t.supported_precisions() == ("fp32", "fp16", "bf16")
    with pytest.raises(TargetUnavailable, match="pytorch-cuda"):
        t.convert(tmp_path / "x.onnx", 1, "fp16", tmp_path)


_CHEAP = """
import sys, json, importlib
import reid_tasks.targets as t
HEAVY = ("torch", "onnxruntime", "openvino", "cv2", "onnx", "nncf")
# what the DAG imports while it is parsed: the registry, every target class, the target CLI -- not even numpy
for m in ["base", "records", "build", "cli"]:
    importlib.import_module("reid_tasks.targets." + m)
names = t.target_names()
precisions = [p for n in names for p in t.get_target(n).supported_precisions()]
queues = [t.get_target(n).scheduling().queue for n in names]
parse_path = sorted(m for m in ("numpy", *HEAVY) if m in sys.modules)
# the numpy-backed helpers stay free of the runtimes
for m in ["timing", "parity"]:
    importlib.import_module("reid_tasks.targets." + m)
heavy = sorted(m for m in HEAVY if m in sys.modules)
print(json.dumps({"parse_path": parse_path, "heavy": heavy, "n": len(precisions), "queues": queues}))
"""


def test_imports_and_plan_stay_cheap() -> None:
    out = subprocess.run([sys.executable, "-c", _CHEAP], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["parse_path"] == [] and result["heavy"] == [], result
    assert result["n"] > 0 and "ascend310" in result["queues"]


def test_module_named_onnxruntime_imports_the_real_package() -> None:
    from reid_tasks.targets import onnxruntime as mine
    from reid_tasks.targets import openvino as mine_ov

    ort = mine._ort()
    assert ort is not mine and hasattr(ort, "InferenceSession") and ort.__name__ == "onnxruntime"
    ov = mine_ov._ov()
    assert ov is not mine_ov and hasattr(ov, "Core") and ov.__name__ == "openvino"


def test_ascend_declares_its_run_settings() -> None:
    from reid_tasks import settings
    from reid_tasks.config import load_config
    from reid_tasks.targets.ascend import SOC_VERSIONS, AscendTarget

    assert settings.FORM_KEYS["soc_version"] == "VALIDATION.ASCEND.SOC_VERSION"
    assert settings.FORM_KEYS["device_ids"] == "VALIDATION.ASCEND.DEVICE_IDS"
    assert "among the deployment's" in settings.RUN_SETTABLE_KEYS["VALIDATION.ASCEND.DEVICE_IDS"]
    assert not settings.run_settable("VALIDATION.ASCEND.INSTALL_PATH")
    deployment = load_config(opts=["VALIDATION.ASCEND.DEVICE_IDS", "[0, 2]"])
    fields = AscendTarget.trigger_fields(deployment)
    assert fields["soc_version"]["enum"] == list(SOC_VERSIONS) and fields["soc_version"]["default"] == "Ascend310"
    assert fields["device_ids"]["default"] == [0, 2] and fields["device_ids"]["items"]["enum"] == [0, 2]

    def problems(*opts: str) -> list[str]:
        return AscendTarget.check_trigger_settings(load_config(opts=list(opts)), deployment)

    assert problems("VALIDATION.ASCEND.DEVICE_IDS", "[2]") == []
    assert problems("VALIDATION.ASCEND.SOC_VERSION", "Ascend999") == [
        f"VALIDATION.ASCEND.SOC_VERSION 'Ascend999' is not one of {list(SOC_VERSIONS)}"
    ]
    for ids in ("[1]", "[0, 0]", "[]"):
        [message] = problems("VALIDATION.ASCEND.DEVICE_IDS", ids)
        assert "must be distinct ids among the deployment's [0, 2]" in message, ids


def _declaring(name: str, *declared: RunSetting, node: str | None = "DUMMYRS", fields: bool = True) -> type[Target]:
    """A target class declaring ``declared`` on its node (LEVEL, and MAX: the deployment's bound of LEVEL)."""

    class Declaring(Target):
        config_node: ClassVar[str | None] = node
        config_defaults: ClassVar[dict[str, Any]] = {"LEVEL": 1, "MAX": 3}
        trigger_settings: ClassVar[tuple[RunSetting, ...]] = declared

        @classmethod
        def trigger_fields(cls, cfg: Any) -> dict[str, dict[str, Any]]:
            if not fields:
                return super().trigger_fields(cfg)
            return {s.param: {"default": 1, "type": "integer", "description": "d"} for s in declared}

        @classmethod
        def check_trigger_settings(cls, cfg: Any, deployment: Any) -> list[str]:
            return [] if cfg.VALIDATION.DUMMYRS.LEVEL <= deployment.VALIDATION.DUMMYRS.MAX else ["too high"]

        def available(self) -> tuple[bool, str]:
            return False, "never here"

    Declaring.name = name
    return Declaring


LEVEL = RunSetting("dummy_level", "LEVEL", "Dummy level", "dummy effort")


def test_a_registered_target_declares_a_run_setting_in_process() -> None:
    from reid_tasks import settings
    from reid_tasks.config import load_config
    from reid_tasks.form import trigger_form

    register_target("dummy-rs", _declaring("dummy-rs", LEVEL))
    try:
        assert settings.FORM_KEYS["dummy_level"] == "VALIDATION.DUMMYRS.LEVEL"
        assert "dummy_level" in settings.TRIGGER_PARAMS and settings.run_settable("VALIDATION.DUMMYRS.LEVEL")
        assert "VALIDATION\\.DUMMYRS\\.LEVEL" in settings.OVERRIDE_KEY_PATTERN
        deployment = load_config()
        form = trigger_form(deployment)
        assert form["dummy_level"] == {"default": 1, "type": "integer", "description": "d", "title": "Dummy level"}
        settings.check_trigger_conf({"dummy_level": 2})
        settings.check_run_values(load_config(opts=["VALIDATION.DUMMYRS.LEVEL", 3]), deployment)
        with pytest.raises(settings.TriggerRefused, match="trigger refused: too high"):
            settings.check_run_values(load_config(opts=["VALIDATION.DUMMYRS.LEVEL", 4]), deployment)
    finally:
        _unregister("dummy-rs")
    assert "dummy_level" not in settings.TRIGGER_PARAMS and not settings.run_settable("VALIDATION.DUMMYRS.LEVEL")
    with pytest.raises(settings.TriggerRefused, match="'dummy_level' is not a setting of this DAG"):
        settings.check_trigger_conf({"dummy_level": 2})


@pytest.mark.parametrize(
    "declaring, message",
    [
        (lambda: _declaring("dummy-rs", RunSetting("x", "NOPE", "X", "x")), "VALIDATION.DUMMYRS.NOPE, which is not"),
        (lambda: _declaring("dummy-rs", LEVEL, node=None), "VALIDATION.None.LEVEL, which is not"),
        (lambda: _declaring("dummy-rs", RunSetting("notes", "LEVEL", "N", "n")), "a setting of the DAG itself"),
        (
            lambda: _declaring("dummy-rs", RunSetting("soc_version", "LEVEL", "S", "s")),
            "'ascend310' and 'dummy-rs' both declare run setting 'soc_version'",
        ),
        (lambda: _declaring("dummy-rs", LEVEL, fields=False), "declares trigger_settings but not their trigger_fields"),
    ],
    ids=["unknown-key", "no-node", "dag-param", "taken-param", "no-fields"],
)
def test_bad_run_setting_declarations_name_the_target(declaring, message) -> None:
    from reid_tasks.config import load_config
    from reid_tasks.form import trigger_form

    register_target("dummy-rs", declaring())
    try:
        with pytest.raises((TargetError, NotImplementedError), match=message):
            trigger_form(load_config())
    finally:
        _unregister("dummy-rs")
