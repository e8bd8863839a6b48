"""Issue 9 section 1, end to end: a second demo checkpoint over the same data is a series of its own."""

from __future__ import annotations

import json
from pathlib import Path

from reid_tasks import cli


def _run(db: str, tmp_path: Path, dataset: Path, weights: Path, capsys) -> str:  # type: ignore[no-untyped-def]
    argv = ["run", "--dataset-root", str(dataset), "--weights", str(weights), "--batch-sizes", "1", "--db", db]
    argv += ["--format", "json", "VALIDATION.BENCH.REPEATS", "1", "VALIDATION.BENCH.PURE_BATCHES", "2"]
    argv += ["VALIDATION.ARTIFACTS_ROOT", str(tmp_path / "runs")]
    cli.main(argv)
    capsys.readouterr()
    from reid_tasks.results import ResultsStore

    with ResultsStore.open(db) as store:
        return store.runs(limit=1)[0].run_key


def _verdicts(db: str, key: str, capsys) -> dict:  # type: ignore[no-untyped-def]
    cli.main(["check", "--db", db, "--run", key, "--format", "json"])
    data = json.loads(capsys.readouterr().out)
    return {(v["rule"], v["metric"], v["series_key"]): v for v in data["verdicts"]}


def test_second_demo_checkpoint_gets_no_history_from_the_first(
    tmp_path: Path, synthetic_market: Path, demo_checkpoint: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    assert cli.main(["sample-data", str(tmp_path / "seed1"), "--seed", "1"]) == 0
    capsys.readouterr()
    other = tmp_path / "seed1" / demo_checkpoint.name
    assert other.is_file() and other.read_bytes() != demo_checkpoint.read_bytes()
    db = f"sqlite:///{tmp_path / 'results.sqlite'}"

    first = _run(db, tmp_path, synthetic_market, demo_checkpoint, capsys)
    second = _run(db, tmp_path, synthetic_market, other, capsys)  # same data, another checkpoint
    third = _run(db, tmp_path, synthetic_market, demo_checkpoint, capsys)

    acc = ("accuracy_history", "rank1", "onnxruntime/bs1/fp32")
    v2 = _verdicts(db, second, capsys)
    assert v2[acc]["regressed"] is None and v2[acc]["baseline_runs"] == []
    assert all(first not in v["baseline_runs"] for v in v2.values())
    v3 = _verdicts(db, third, capsys)
    assert v3[acc]["regressed"] is not None and v3[acc]["baseline_runs"] == [first]
    assert all(second not in v["baseline_runs"] for v in v3.values())
    for v in (*v2.values(), *v3.values()):
        assert v["series"]["identity_key"] not in (None, "unknown")
    from reid_tasks.results import ResultsStore

    with ResultsStore.open(db) as store:
        run = store.get_run(third)
        assert run.kind in ("demo", "configured") and run.environment.get("host")
        perf = [r for r in store.results(run_key=third) if r.throughput_best]
        assert perf and not perf[0].simulated
