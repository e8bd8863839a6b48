"""Runs ``dag.test()`` of reid_validation in this process and prints one JSON line with the outcome.

Used by tests/dag/test_dag_run.py in a subprocess whose environment points AIRFLOW_HOME at a migrated
SQLite database. Arguments:

    --bad-conf JSON        first try a run with this conf; the Params validation error is reported
    --conf JSON            run_conf of a run (repeatable: the runs happen in order)
    --record-again N       after the first run, call the record step N more times with that run's XComs
                           (what a retried record_results task does) and report the row counts
    --attack JSON          conf of a trigger that must be refused (repeatable): reports the Params error or
                           the run's task states, and the files under $REID_DATA_DIR before and after
    --fail-convert T:B:P   conversion of target T at batch size B, precision P raises (an injected failure;
                           PrecisionNotSupported, which the retry policy does not retry)
"""

from __future__ import annotations

import argparse
import json
import os

from airflow.dag_processing.dagbag import DagBag

DAG_ID = "reid_validation"


def _tis(dr) -> list[list]:
    from airflow import settings

    session = settings.Session()
    return sorted(
        [ti.task_id, ti.map_index, str(ti.state), ti.try_number] for ti in dr.get_task_instances(session=session)
    )


def _xcoms(run_id: str) -> dict[tuple[str, int], object]:
    from airflow import settings
    from airflow.models.xcom import XComModel
    from sqlalchemy import select

    session = settings.Session()
    rows = session.scalars(
        select(XComModel).where(XComModel.dag_id == DAG_ID, XComModel.run_id == run_id, XComModel.key == "return_value")
    ).all()
    return {(r.task_id, r.map_index): XComModel.deserialize_value(r) for r in rows}


def _counts(db_url: str | None) -> dict[str, int]:
    from sqlalchemy import create_engine, text

    from reid_tasks.results.urls import resolve_url

    engine = create_engine(resolve_url(db_url))
    with engine.connect() as conn:
        return {
            t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("validation_runs", "perf_results", "accuracy_results")
        }


def _status(run_key: str) -> str | None:
    from sqlalchemy import create_engine, text

    from reid_tasks.results.urls import resolve_url

    with create_engine(resolve_url(None)).connect() as conn:
        row = conn.execute(text("SELECT status FROM validation_runs WHERE run_key = :k"), {"k": run_key}).first()
    return row[0] if row else None


def record_again(run_id: str, times: int) -> dict:
    from reid_tasks import steps

    x = _xcoms(run_id)
    ctx, export, data = x[("prepare_run", -1)], x[("export_model", -1)], x[("preprocess_data", -1)]
    evaluations = [v for (task_id, _), v in sorted(x.items()) if task_id.endswith(".evaluate")]
    before = _counts(ctx.get("db_url") or None)
    returned = [steps.record_results(ctx, evaluations, export, data) for _ in range(times)]
    return {"before": before, "after": _counts(ctx.get("db_url") or None), "returned": returned}


def _files(root: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files)


def attack(dag, conf: dict) -> dict:
    """One trigger that must be refused: the Params error, or the run's task states; files written meanwhile."""
    data = os.environ["REID_DATA_DIR"]
    before = _files(data)
    result: dict = {"conf": conf}
    try:
        dr = dag.test(run_conf=conf)
        result.update(state=str(dr.state), tis=_tis(dr))
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    result["written"] = sorted(set(_files(data)) - set(before))
    return result


def fail_convert(spec: str) -> None:
    """Make one (target, batch size, precision) conversion fail, in this process (dag.test runs tasks here)."""
    from reid_tasks.errors import PrecisionNotSupported
    from reid_tasks.targets import get_target

    target, batch_size, precision = spec.split(":")
    cls = type(get_target(target))
    build = cls._build

    def failing(self, onnx_path, bs, prec, out_dir, **kw):
        if (bs, prec) == (int(batch_size), precision):
            raise PrecisionNotSupported(f"injected by the test: {target} cannot build bs{bs} {prec}")
        return build(self, onnx_path, bs, prec, out_dir, **kw)

    cls._build = failing


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conf", action="append", default=[])
    parser.add_argument("--attack", action="append", default=[])
    parser.add_argument("--bad-conf")
    parser.add_argument("--record-again", type=int, default=0)
    parser.add_argument("--fail-convert")
    args = parser.parse_args()
    if args.fail_convert:
        fail_convert(args.fail_convert)
    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    if bag.import_errors:
        print(json.dumps({"import_errors": bag.import_errors}))
        return 1
    dag = bag.dags[DAG_ID]
    out: dict = {"runs": []}
    if args.bad_conf:
        try:
            dag.test(run_conf=json.loads(args.bad_conf))
            out["bad_conf_error"] = None
        except Exception as exc:
            out["bad_conf_error"] = f"{type(exc).__name__}: {exc}"
    out["attacks"] = [attack(dag, json.loads(conf)) for conf in args.attack]
    for i, conf in enumerate(args.conf):
        dr = dag.test(run_conf=json.loads(conf))
        status = _status(f"{DAG_ID}/{dr.run_id}")  # the results DB's view right after the run
        out["runs"].append({"run_id": dr.run_id, "state": str(dr.state), "tis": _tis(dr), "status": status})
        if i == 0 and args.record_again:
            out["record_again"] = record_again(dr.run_id, args.record_again)
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
