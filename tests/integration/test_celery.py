"""The DAG on the real engine: CeleryExecutor + Redis + PostgreSQL, a default worker and two Ascend workers
standing for two hosts of a fleet (2 devices each).

Asserts the run succeeds, Ascend conversions/benchmarks ran on the Ascend workers (the only ones with the
Ascend tool doubles) and every other task on the default worker, each benchmark leased a device of the host
whose worker ran it and no device ran two benchmarks at once (lease log), and results are in the results
database. Run alone: ``pytest tests/integration -m celery``.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from pathlib import Path

import pytest

from reid_tasks.fleet import lease_intervals, read_lease_log

from .celery_stack import WORKERS, CeleryStack

pytestmark = [pytest.mark.integration, pytest.mark.celery, pytest.mark.slow, pytest.mark.timeout(900)]

RUN_TIMEOUT_S = 480


def _services_up() -> str | None:
    try:
        import redis

        from .celery_stack import pg_admin

        with pg_admin():
            pass
        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=3).ping()
    except Exception as exc:
        return str(exc)
    return None


@pytest.fixture
def stack(tmp_path: Path, synthetic_market: Path):
    reason = _services_up()
    if reason:
        pytest.skip(f"PostgreSQL/Redis on 127.0.0.1 not reachable: {reason}")
    s = CeleryStack(tmp_path, allowed_roots=(str(synthetic_market.parent),))
    ok = False
    try:
        s.start()
        s.wait_api()
        yield s
        ok = True
    finally:
        if not ok:
            print(s.dump_logs())
        s.stop()


def wait_for(predicate, timeout: float, what: str, stack: CeleryStack, every: float = 3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.check_alive()
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"{what}: not done after {timeout:.0f}s")


def test_celery_run_routes_tasks_to_their_workers(stack: CeleryStack, synthetic_market, demo_checkpoint):
    af = stack.af_db
    wait_for(
        lambda: stack.query(af, "SELECT 1 FROM serialized_dag WHERE dag_id = 'reid_validation'"),
        240,
        "DAG serialized by the dag-processor",
        stack,
    )
    run_id = f"it_celery_{uuid.uuid4().hex[:8]}"
    conf = {
        "targets": ["onnxruntime", "ascend310"],
        "batch_sizes": [2, 3],  # no reference throughput for these: perf rules give "no verdict"
        "precisions": ["fp32"],
        "dataset_root": str(synthetic_market),
        "checkpoint": str(demo_checkpoint),
        "notes": "celery integration test",
    }
    stack.airflow("dags", "trigger", "reid_validation", "--run-id", run_id, "--conf", json.dumps(conf))

    def finished():
        rows = stack.query(af, "SELECT state FROM dag_run WHERE dag_id = 'reid_validation' AND run_id = %s", (run_id,))
        return rows and rows[0][0] in ("success", "failed") and rows[0][0]

    state = wait_for(finished, RUN_TIMEOUT_S, f"dag run {run_id}", stack, every=5)
    tis = stack.query(
        af,
        "SELECT task_id, map_index, state, hostname, queue, pool, start_date, end_date FROM task_instance "
        "WHERE dag_id = 'reid_validation' AND run_id = %s ORDER BY task_id, map_index",
        (run_id,),
    )
    table = "\n".join(f"{t[0]}[{t[1]}] {t[2]} host={t[3]} queue={t[4]} pool={t[5]}" for t in tis)
    if state != "success":
        print(stack.dump_logs())
    assert state == "success", f"run {run_id} is {state}:\n{table}"

    default_host = WORKERS["default"][1]
    fleet_host_of = {name: fleet for _q, name, fleet in WORKERS.values() if fleet}  # TI hostname -> fleet host
    ran = [t for t in tis if t[2] not in ("skipped", "removed")]

    def is_ascend_tool(task_id: str) -> bool:
        return task_id.startswith("ascend310.") and task_id.endswith((".convert", ".benchmark"))

    ascend_tools = [t for t in ran if is_ascend_tool(t[0])]
    assert len(ascend_tools) == 4, table  # 2 batch sizes x (convert, benchmark)
    for task_id, map_index, ti_state, host, queue, pool, *_ in ran:
        assert ti_state == "success", table
        if is_ascend_tool(task_id):
            assert host in fleet_host_of and queue == "ascend310", f"{task_id}[{map_index}] on {host}\n{table}"
            # conversion (ATC) holds no device: only benchmarks take the device pool
            assert pool == ("ascend310_devices" if task_id.endswith(".benchmark") else "default_pool"), table
        else:
            assert (host, queue) == (default_host, "default"), f"{task_id}[{map_index}] on {host}\n{table}"

    # each benchmark leased a device of the host whose worker ran it; never two at once on one device
    events = [e for e in read_lease_log(stack.leases) if e["label"].startswith(f"reid_validation/{run_id} ")]
    acquired = sorted(e["host"] for e in events if e["event"] == "acquire")
    bench_hosts = sorted(fleet_host_of[t[3]] for t in ascend_tools if t[0].endswith(".benchmark"))
    assert acquired == bench_hosts, (events, table)
    for device, spans in lease_intervals(events).items():
        for (_, end, a), (start, _, b) in itertools.pairwise(sorted(spans)):
            assert end <= start, f"{device}: {a} and {b} overlap"

    res = stack.res_db
    [(status,)] = stack.query(
        res, "SELECT status FROM validation_runs WHERE run_key = %s", (f"reid_validation/{run_id}",)
    )
    assert status == "success"
    acc = stack.query(
        res,
        "SELECT a.target, a.batch_size, a.precision FROM accuracy_results a JOIN validation_runs r ON a.run_id = r.id "
        "WHERE r.run_key = %s ORDER BY 1, 2",
        (f"reid_validation/{run_id}",),
    )
    assert acc == [
        ("ascend310", 2, "fp32"),
        ("ascend310", 3, "fp32"),
        ("onnxruntime", 2, "fp32"),
        ("onnxruntime", 3, "fp32"),
    ]
    perf = stack.query(
        res,
        "SELECT p.target, count(*) FROM perf_results p JOIN validation_runs r ON p.run_id = r.id "
        "WHERE r.run_key = %s GROUP BY 1 ORDER BY 1",
        (f"reid_validation/{run_id}",),
    )
    assert perf == [("ascend310", 4), ("onnxruntime", 4)]  # real data + pure inference per artifact
    alerts = stack.query(
        res,
        "SELECT count(*) FROM alerts a JOIN validation_runs r ON a.run_id = r.id WHERE r.run_key = %s",
        (f"reid_validation/{run_id}",),
    )
    assert alerts == [(0,)]
