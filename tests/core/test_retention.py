"""`reid-validate gc`: what is kept and deleted, dry run, runs in progress, the race with a starting run."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from reid_tasks import cli
from reid_tasks.errors import ConfigError
from reid_tasks.retention import (
    GC_LOCK,
    Policy,
    collect,
    mark_finished,
    record_storage,
    registering,
)
from reid_tasks.storage import file_lock

DAY = 86400.0


def _age(path: Path, seconds: float) -> None:
    """Set the mtime of everything under ``path`` to ``seconds`` ago."""
    t = time.time() - seconds
    for dirpath, _, files in os.walk(path):
        for name in files:
            os.utime(os.path.join(dirpath, name), (t, t))
        os.utime(dirpath, (t, t))


def _cache(root: Path, name: str, fp: str, age_s: float = 3 * DAY) -> Path:
    cache = root / "cache" / name
    cache.mkdir(parents=True)
    (cache / "manifest.json").write_text(json.dumps({"fingerprint": fp}))
    (cache / "images.u8.npy").write_bytes(b"x" * 10000)
    layout = root / "cache" / "_seed_layouts" / fp[:32]
    (layout / "prep_dataset").mkdir(parents=True)
    (layout / "prep_dataset" / "a.bin").write_bytes(b"y" * 50000)
    _age(cache, age_s)
    _age(layout, age_s)
    return cache


def _run(root: Path, name: str, cache: Path | None, finished_days_ago: float | None, age_s: float = 0.0) -> Path:
    run = root / name
    (run / "artifacts").mkdir(parents=True)
    (run / "artifacts" / "model.onnx").write_bytes(b"z" * 20000)
    (run / "context.json").write_text(json.dumps({"run_key": name, "cache_dir": str(cache) if cache else ""}))
    if cache is not None:
        record_storage(run, cache, json.loads((cache / "manifest.json").read_text())["fingerprint"])
    if finished_days_ago is not None:
        mark_finished(run, "success")
        data = json.loads((run / "finished.json").read_text())
        data["finished_at"] = time.strftime(
            "%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - finished_days_ago * DAY)
        )
        (run / "finished.json").write_text(json.dumps(data))
    if age_s:
        _age(run, age_s)
    return run


@pytest.fixture()
def root(tmp_path):
    root = tmp_path / "runs"
    old_cache = _cache(root, "old_market", "a" * 64)
    new_cache = _cache(root, "market", "b" * 64)
    live_cache = _cache(root, "live_market", "c" * 64)
    _run(root, "r_old1", old_cache, finished_days_ago=40, age_s=40 * DAY)
    _run(root, "r_old2", old_cache, finished_days_ago=35, age_s=35 * DAY)
    _run(root, "r_new", new_cache, finished_days_ago=1, age_s=DAY)
    _run(root, "r_live", live_cache, finished_days_ago=None)  # in progress: no finished.json, recent changes
    _run(root, "r_dead", None, finished_days_ago=None, age_s=3 * DAY)  # killed three days ago
    leftover = root / "cache" / ".market.abc.tmp"
    leftover.mkdir()
    _age(leftover, 2 * DAY)
    (root / "not_a_run").mkdir()
    return root


def _names(report, kind):
    return sorted(Path(i.path).name for i in report.deleted if i.kind == kind)


def test_policy_keeps_recent_and_in_progress_deletes_the_rest(root):
    dry = collect(root, Policy(keep_days=2, keep_runs=1), dry_run=True)
    assert _names(dry, "run") == ["r_dead", "r_old1", "r_old2"]
    assert _names(dry, "cache") == ["old_market"]
    assert _names(dry, "seed layout") == ["a" * 32]
    assert _names(dry, "leftover") == [".market.abc.tmp"]
    assert all((root / n).exists() for n in ("r_old1", "r_dead", "cache/old_market"))  # dry run: nothing gone
    assert dry.freed_bytes > 3 * 20000 + 10000 + 50000
    assert "would free" in dry.lines()[-1] and "1 in progress" in dry.lines()[-1]

    report = collect(root, Policy(keep_days=2, keep_runs=1))
    assert [(i.kind, Path(i.path).name) for i in report.deleted] == [(i.kind, Path(i.path).name) for i in dry.deleted]
    left = sorted(p.name for p in root.iterdir())
    assert left == [".gc.lock", "cache", "not_a_run", "r_live", "r_new"]
    assert sorted(p.name for p in (root / "cache").iterdir()) == ["_seed_layouts", "live_market", "market"]
    assert sorted(p.name for p in (root / "cache" / "_seed_layouts").iterdir()) == ["b" * 32, "c" * 32]
    assert report.in_progress == [str(root / "r_live")]
    assert "freed" in report.lines()[-1] and "3 runs, 1 cache, 1 seed layout, 1 leftover" in report.lines()[-1]


def test_keep_runs_counts_newest_finished_and_zero_turns_off(root):
    report = collect(root, Policy(keep_days=0, keep_runs=3), dry_run=True)
    assert _names(report, "run") == ["r_old1"]  # r_new, r_dead (abandoned 3 days ago), r_old2 are the newest 3
    report = collect(root, Policy(keep_days=0, keep_runs=0), dry_run=True)
    assert _names(report, "run") == ["r_dead", "r_new", "r_old1", "r_old2"]
    assert _names(report, "cache") == ["market", "old_market"]


def test_policy_rejects_negative_values():
    with pytest.raises(ConfigError, match="RETENTION"):
        Policy(keep_days=-1, keep_runs=1)


def test_fresh_unreferenced_cache_is_not_collected(root):
    (root / "cache" / "_seed_layouts" / ("d" * 32)).mkdir()  # being written by a run that has not recorded it yet
    report = collect(root, Policy(keep_days=0, keep_runs=0), dry_run=True)
    assert "d" * 32 not in _names(report, "seed layout")


def test_gc_waits_for_a_registering_run_and_then_sees_it_in_progress(root):
    """A run that starts while gc is deciding cannot lose its directory: registration and collection exclude
    each other, and a registered run without finished.json is in progress."""
    started = threading.Event()
    results = {}

    def register_run():
        with registering(root):
            started.set()
            time.sleep(0.5)  # gc tries to start now and must wait
            run = root / "r_starting"
            run.mkdir()
            (run / "context.json").write_text(json.dumps({"run_key": "r_starting", "cache_dir": ""}))

    t = threading.Thread(target=register_run)
    t.start()
    started.wait(5)
    t0 = time.monotonic()
    results["report"] = collect(root, Policy(keep_days=0, keep_runs=0))
    waited = time.monotonic() - t0
    t.join()
    assert waited >= 0.3
    assert (root / "r_starting" / "context.json").is_file() and (root / "r_live").is_dir()
    assert str(root / "r_starting") in results["report"].in_progress


def test_gc_racing_a_running_pipeline_deletes_nothing_it_needs(tmp_path, synthetic_market, demo_checkpoint, capsys):
    """gc (keep nothing finished) in a loop while a real run executes: the run succeeds and keeps its files."""
    from reid_tasks import pipeline

    root = tmp_path / "runs"
    old = _run(root, "finished_long_ago", None, finished_days_ago=90, age_s=90 * DAY)
    stop = threading.Event()
    reports = []

    def loop():
        while not stop.is_set():
            reports.append(collect(root, Policy(keep_days=0, keep_runs=0)))
            time.sleep(0.05)

    t = threading.Thread(target=loop)
    t.start()
    try:
        result = pipeline.run(
            {
                "dataset_root": str(synthetic_market),
                "checkpoint": str(demo_checkpoint),
                "batch_sizes": [2],
                "db_url": f"sqlite:///{tmp_path / 'results.sqlite'}",
                "config_overrides": {
                    "VALIDATION.ARTIFACTS_ROOT": str(root),
                    "VALIDATION.BENCH.REPEATS": 1,
                    "VALIDATION.PURE": False,
                },
            },
            run_key="race/1",
        )
    finally:
        stop.set()
        t.join()
    assert result.status == "success"
    assert not old.exists() and len(reports) > 3
    run_dir = root / "race_1"
    assert (run_dir / "finished.json").is_file() and (run_dir / "context.json").is_file()
    assert any(i.kind == "run" and i.path == str(old) for r in reports for i in r.deleted)
    cache = json.loads((run_dir / "storage.json").read_text())["cache_dir"]
    assert (Path(cache) / "manifest.json").is_file()
    # the run's disk use is stored with it and shown by `reid-validate results`
    from reid_tasks.results import ResultsStore

    used = json.loads((run_dir / "finished.json").read_text())["disk_bytes"]
    db = f"sqlite:///{tmp_path / 'results.sqlite'}"
    assert used > 1_000_000 and ResultsStore.open(db).get_run("race/1").disk_bytes == used
    assert cli.main(["results", "--db", db, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and {r["run_disk_bytes"] for r in rows} == {used}
    # now finished and outside the policy: the next collection frees it, its cache too (once stale)
    report = collect(root, Policy(keep_days=0, keep_runs=0))
    assert not run_dir.exists() and any(i.kind == "run" for i in report.deleted)


def test_finished_marker_records_disk_use(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "big.bin").write_bytes(b"\0" * 300_000)
    used = mark_finished(run, "success")
    data = json.loads((run / "finished.json").read_text())
    assert used >= 300_000 and data["disk_bytes"] == used and data["status"] == "success"


def test_cli_gc_dry_run_and_policy_from_config(root, capsys):
    rc = cli.main(["gc", "--dry-run", "VALIDATION.ARTIFACTS_ROOT", str(root), "VALIDATION.RETENTION.KEEP_RUNS", "1"])
    out = capsys.readouterr().out
    assert rc == 0 and "would delete run" in out and "r_old1" in out and "would free" in out
    assert (root / "r_old1").exists()
    rc = cli.main(["gc", "--keep-days", "100", "--keep-runs", "0", "VALIDATION.ARTIFACTS_ROOT", str(root)])
    out = capsys.readouterr().out
    # every run finished (or died) within 100 days: only the stale temporary folder goes
    assert rc == 0 and "deleted leftover" in out and "deleted run" not in out
    assert all((root / n).is_dir() for n in ("r_old1", "r_old2", "r_new", "r_live", "r_dead"))
    assert not (root / "cache" / ".market.abc.tmp").exists()


def test_lock_file_is_exclusive_between_processes(tmp_path):
    with file_lock(tmp_path / GC_LOCK) as held:
        assert held
        with file_lock(tmp_path / GC_LOCK, wait=False) as again:
            assert again is False
