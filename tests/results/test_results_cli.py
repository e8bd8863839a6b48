"""The results sub-commands, called through a parser built with reid_tasks.results.cli.register."""

from __future__ import annotations

import argparse
import csv
import io
import json

import pytest
from results_helpers import acc_row, perf_row, record_run

from reid_tasks.errors import ResultsError
from reid_tasks.results import ResultsStore
from reid_tasks.results.cli import register


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reid-validate")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    return parser


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    args = _parser().parse_args(argv)
    rc = args.func(args)
    return rc, capsys.readouterr().out


@pytest.fixture
def filled(db_url: str) -> str:
    with ResultsStore.open(db_url, migrate=True) as store:
        for i in range(6):
            record_run(store, f"h{i}", i, [perf_row(1000.0 + i)], [acc_row(94.5)])
        record_run(store, "bad", 10, [perf_row(850.0, latency_p99_ms=15.95)], [acc_row(94.5)])
    return db_url


def test_results_formats(filled: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = run(["results", "--db", filled, "--limit", "3"], capsys)
    lines = out.splitlines()
    assert rc == 0 and lines[0].split()[:5] == ["run_key", "status", "run_kind", "started_at", "target"]
    assert lines[1].split()[:2] == ["bad", "regressed"] and "850.00" in lines[1] and len(lines) == 4
    rc, out = run(["results", "--db", filled, "--format", "csv", "--batch-size", "16"], capsys)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rc == 0 and len(rows) == 7 and rows[0]["throughput_best"] == "850.0" and rows[0]["rank1"] == "94.5"
    rc, out = run(["results", "--db", filled, "--format", "json", "--since", "2025-01-06"], capsys)
    data = json.loads(out)
    assert [r["run_key"] for r in data] == ["bad", "h5"] and data[0]["open_alerts"] == 1
    argv = ["results", "--db", filled, "--format", "json", "--until", "2025-01-02", "--device-kind", "cpu"]
    rc, out = run(argv, capsys)
    assert [r["run_key"] for r in json.loads(out)] == ["h1", "h0"]  # a bare --until date includes that day
    rc, out = run(["results", "--db", filled, "--format", "json", "--device-kind", "cuda"], capsys)
    assert json.loads(out) == []
    rc, out = run(["results", "--db", filled, "--target", "nothing"], capsys)
    assert out.strip() == "no results"


def test_alerts_ack_and_check(filled: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = run(["check", "--db", filled, "--run", "bad"], capsys)
    assert rc == 1 and "[perf_history]" in out and "1 open alert(s)" in out
    rc, out = run(["check", "--db", filled, "--run", "h5"], capsys)
    assert rc == 0 and "0 open alert(s)" in out
    rc, out = run(["alerts", "--db", filled, "--open", "--format", "json"], capsys)
    alerts = json.loads(out)
    assert rc == 0 and len(alerts) == 1 and alerts[0]["observed"] == 850.0 and alerts[0]["z"] < -5
    rc, out = run(["alerts", "ack", str(alerts[0]["id"]), "--db", filled, "--by", "ci"], capsys)
    assert rc == 0 and "run bad is success" in out
    rc, out = run(["alerts", "--db", filled, "--open"], capsys)
    assert out.strip() == "no open alerts"
    rc, out = run(["alerts", "--db", filled, "--format", "csv"], capsys)
    assert len(list(csv.DictReader(io.StringIO(out)))) == 1
    rc, out = run(["check", "--db", filled, "--run", "bad"], capsys)
    assert rc == 0
    with pytest.raises(ResultsError, match="unknown run"):
        run(["check", "--db", filled, "--run", "missing"], capsys)


def test_history_plot_and_table(filled: str, tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    png = tmp_path / "trend.png"
    rc, out = run(
        ["history", "--db", filled, "--metric", "throughput", "--target", "onnxruntime", "--batch-size", "16",
         "--plot", str(png)],
        capsys,
    )  # fmt: skip
    assert rc == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert "onnxruntime/cpu/bs16/fp32/real throughput (samples/s): 7 point(s)" in out
    rc, out = run(
        ["history", "--db", filled, "--metric", "rank1", "--target", "onnxruntime", "--batch-size", "16",
         "--format", "json"],
        capsys,
    )  # fmt: skip
    data = json.loads(out)
    assert data["method"] == "change_point" and len(data["points"]) == 7 and data["unit"] == "%"


def test_check_lists_baselines_failures_simulated_and_parity(filled: str, capsys: pytest.CaptureFixture[str]) -> None:
    from reid_tasks.results import FailureRow, RunInfo

    with ResultsStore.open(filled) as store:
        fingerprint = {"query": 3368, "gallery": 15913, "hash": "f00d"}  # record_run's: the same series identity
        store.start_run(RunInfo(run_key="next", kind="demo", model_sha256="a" * 64, dataset_fingerprint=fingerprint))
        store.record_perf("next", perf_row(1000.0))
        detail = {"checks": [{"measure": "min_cosine", "value": 0.97, "limit": 0.99, "passed": False}]}
        store.record_accuracy(
            "next",
            acc_row(target="openvino", precision="int8", parity_passed=False, parity_detail=detail, simulated=True),
        )
        store.record_failure("next", FailureRow("ascend310", 1, "fp16", "benchmark", "device busy", "tail", 3))
        store.finish_run("next")
        store.evaluate_run("next")
    rc, out = run(["check", "--db", filled, "--run", "next", "--format", "json"], capsys)
    data = json.loads(out)
    assert rc == 1 and data["run"]["status"] == "regressed" and data["run"]["kind"] == "demo"
    thr = next(v for v in data["verdicts"] if v["rule"] == "perf_history" and v["metric"] == "throughput")
    assert thr["baseline_runs"] == ["h5", "h4", "h3", "h2", "h1", "h0"]  # newest first; "bad" is not good
    assert [f["stage"] for f in data["failures"]] == ["benchmark"]
    rc, out = run(["alerts", "--db", filled, "--run", "next", "--format", "json"], capsys)
    assert [(a["rule"], a["metric"]) for a in json.loads(out)] == [("parity", "min_cosine")]
    rc, out = run(["results", "--db", filled, "--run", "next", "--format", "json"], capsys)
    rows = {r["target"]: r for r in json.loads(out)}
    assert rows["openvino"]["simulated"] is True and rows["openvino"]["parity_passed"] is False
    assert rows["ascend310"]["failed_stage"] == "benchmark" and rows["onnxruntime"]["run_kind"] == "demo"
    rc, out = run(["results", "--db", filled, "--run", "next"], capsys)
    assert "device busy" in out and "demo" in out
    rc, out = run(["check", "--db", filled, "--run", "next"], capsys)
    assert "FAILED ascend310/bs1/fp16 at benchmark: device busy" in out and "(demo run)" in out


def test_db_commands(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    rc, out = run(["db", "current", "--db", url], capsys)
    assert rc == 0 and "none (no schema)" in out
    rc, out = run(["db", "upgrade", "--db", url], capsys)
    from reid_tasks.results.migrate import head_revision

    assert f"revision {head_revision()} (head)" in out
    rc, out = run(["db", "downgrade", "base", "--db", url], capsys)
    assert "none (no schema)" in out
    with pytest.raises(ResultsError, match="db upgrade nope"):
        run(["db", "upgrade", "nope", "--db", url], capsys)


def test_bad_arguments_are_argparse_errors(capsys: pytest.CaptureFixture[str]) -> None:
    parser = _parser()
    for argv in (
        ["results", "--since", "yesterday"],
        ["results", "--until", "tomorrow"],
        ["results", "--batch-size", "0"],
        ["history", "--metric", "fps", "--target", "x", "--batch-size", "1"],
        ["check"],
        ["results", "--format", "xml"],
    ):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args(argv)
        assert exc.value.code == 2, argv
    capsys.readouterr()
