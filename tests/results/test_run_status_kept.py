"""Re-recording a finished run's metadata (an Airflow task cleared after the run) must not reopen it."""

from pathlib import Path

from reid_tasks.results import ResultsStore, RunInfo


def test_metadata_update_keeps_final_status(tmp_path: Path):
    store = ResultsStore.open(f"sqlite:///{tmp_path / 'r.sqlite'}")
    info = RunInfo(run_key="reid_validation/manual__1", trigger="manual", dag_id="reid_validation", run_id="manual__1")
    store.start_run(info)
    assert store.finish_run(info.run_key, "success") == "success"
    store.start_run(RunInfo(**{**info.to_dict(), "onnx_sha256": "ab" * 32}), reset_status=False)
    run = store.get_run(info.run_key)
    assert run.status == "success" and run.onnx_sha256 == "ab" * 32 and run.finished_at is not None
    store.start_run(info)  # a new attempt of the whole run reopens it
    assert store.get_run(info.run_key).status == "running"
