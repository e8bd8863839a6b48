"""A throwaway CeleryExecutor deployment on this machine, for tests/integration/test_celery.py.

PostgreSQL (127.0.0.1:5432): one database for Airflow's metadata, one for the results. Redis
(127.0.0.1:6379): a dedicated database number as the broker. A temporary AIRFLOW_HOME; the api-server
(execution API on a free port, shared JWT secret), scheduler, dag-processor and three Celery workers with
distinct hostnames: ``default`` (queue ``default``) and two ``ascend310`` workers standing for two Ascend
hosts of a fleet (``npu-a`` and ``npu-b``, devices 0,1 each: $REID_FLEET_HOST, the npu-smi double's devices,
concurrency 2 = their devices; the only ones with the Ascend tool doubles on PATH / PYTHONPATH). Every
component reads the deployment config ``deployment.yml`` ($REID_CONFIG_FILE: the fleet, fast benchmark
settings); the device pool ``ascend310_devices`` gets its 4 slots from it. ``stop()`` kills every process
group, drops the databases and flushes the Redis database, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DOUBLES = ROOT / "tests" / "doubles"
PG_ADMIN_DSN = os.environ.get("REID_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
PG_USER = "postgres"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
#: worker -> (queue, task-instance hostname, fleet host or None)
WORKERS = {
    "default": ("default", "reid-default-worker", None),
    "ascend-a": ("ascend310", "reid-ascend-a", "npu-a"),
    "ascend-b": ("ascend310", "reid-ascend-b", "npu-b"),
}
FLEET_DEVICES = [0, 1]  # per Ascend host
FAST_BENCH = {"WARMUP": 1, "REPEATS": 1, "PURE_BATCHES": 2}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_admin(dbname: str = "postgres"):
    import psycopg

    return psycopg.connect(
        PG_ADMIN_DSN.replace("dbname=postgres", f"dbname={dbname}"), autocommit=True, connect_timeout=5
    )


@dataclass
class CeleryStack:
    tmp: Path
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    created_dbs: list[str] = field(default_factory=list)
    redis_db: int | None = None
    allowed_roots: tuple[str, ...] = ()  # besides the data dir: where the test's dataset and checkpoint live

    def __post_init__(self) -> None:
        self.home = self.tmp / "airflow"
        self.data = self.tmp / "data"
        self.logs = self.tmp / "component-logs"
        for d in (self.home, self.data, self.logs, self.tmp / "plugins"):
            d.mkdir(parents=True, exist_ok=True)
        self.af_db = f"reid_it_airflow_{self.tag}"
        self.res_db = f"reid_it_results_{self.tag}"
        self.api_port = free_port()
        self.leases = self.tmp / "leases"  # one directory for both simulated hosts: lock files are per host
        self.deployment = self.tmp / "deployment.yml"
        hosts = [f"{h}: {','.join(map(str, FLEET_DEVICES))}" for _q, _n, h in WORKERS.values() if h]
        self.deployment.write_text(
            json.dumps(  # JSON is YAML
                {
                    "VALIDATION": {
                        "ASCEND": {"HOSTS": hosts, "DEVICE_IDS": FLEET_DEVICES, "LEASE_DIR": str(self.leases)},
                        "BENCH": FAST_BENCH,
                        # paths a trigger may name: the data dir and the test's data (deployment setting)
                        "ALLOWED_ROOTS": [str(self.data), *self.allowed_roots],
                    }
                }
            )
        )

    # ------------------------------------------------------------------ config
    def pg_url(self, db: str, driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{PG_USER}@127.0.0.1:5432/{db}"

    @property
    def results_url(self) -> str:
        return self.pg_url(self.res_db)

    def env(self, worker: str | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "REID_"))}
        venv_bin = str(Path(sys.executable).parent)
        path = [venv_bin, env.get("PATH", "")]
        pythonpath = [str(ROOT), str(HERE)]
        fleet_host = WORKERS[worker][2] if worker else None
        if fleet_host:  # the only components that can run the Ascend tools (doubles)
            path.insert(0, str(DOUBLES / "bin"))
            pythonpath.append(str(DOUBLES / "python"))
            env["REID_FLEET_HOST"] = fleet_host
            env["REID_DOUBLE_NPU_DEVICES"] = ",".join(map(str, FLEET_DEVICES))
        env.update(
            PATH=os.pathsep.join(path),
            PYTHONPATH=os.pathsep.join(pythonpath),
            AIRFLOW_HOME=str(self.home),
            AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
            AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
            AIRFLOW__CORE__PLUGINS_FOLDER=str(self.tmp / "plugins"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{self.api_port}/execution/",
            AIRFLOW__CORE__HOSTNAME_CALLABLE="reid_worker_hostname.hostname",
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=self.pg_url(self.af_db),
            AIRFLOW__CELERY__BROKER_URL=f"redis://{REDIS_HOST}:{REDIS_PORT}/{self.redis_db}",
            AIRFLOW__CELERY__RESULT_BACKEND="db+" + self.pg_url(self.af_db),
            AIRFLOW__CELERY__WORKER_CONCURRENCY="2",
            AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER="1",
            AIRFLOW__API_AUTH__JWT_SECRET=self._secret("jwt"),
            AIRFLOW__API__SECRET_KEY=self._secret("api"),
            AIRFLOW__API__HOST="127.0.0.1",
            AIRFLOW__API__PORT=str(self.api_port),
            AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{self.api_port}",
            AIRFLOW__API__WORKERS="1",
            AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="2",
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="30",
            AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
            REID_SCHEDULE="none",
            REID_CONFIG_FILE=str(self.deployment),
            REID_DATA_DIR=str(self.data),
            REID_RESULTS_DB_URL=self.results_url,
        )
        if worker:
            env["REID_WORKER_HOSTNAME"] = WORKERS[worker][1]
        return env

    def _secret(self, name: str) -> str:
        path = self.tmp / f"{name}.secret"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(32))
        return path.read_text()

    # ------------------------------------------------------------------ lifecycle
    def airflow(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-m", "airflow", *args],
            env=self.env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode:
            raise RuntimeError(
                f"airflow {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        return proc

    def _spawn(self, name: str, args: list[str], worker: str | None = None) -> None:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "airflow", *args],
            env=self.env(worker),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start(self) -> None:
        import redis

        with pg_admin() as admin:
            for db in (self.af_db, self.res_db):
                admin.execute(f'CREATE DATABASE "{db}"')
                self.created_dbs.append(db)
        # a Redis database number nobody uses right now (empty): the broker of this test only
        self.redis_db = next(
            n for n in range(15, 1, -1) if not redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=n).dbsize()
        )
        self.airflow("db", "migrate")
        subprocess.run(  # PostgreSQL results databases are migrated by the deployment, not on first use
            [sys.executable, "-m", "reid_tasks.cli", "db", "upgrade", "--db", self.results_url],
            env=self.env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        pools = self.home / "pools.json"
        out = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "airflow_pools.py")],
            env=self.env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        pools.write_text(out)
        self.airflow("pools", "import", str(pools))
        self._spawn("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(self.api_port), "--workers", "1"])
        self._spawn("scheduler", ["scheduler"])
        self._spawn("dag-processor", ["dag-processor"])
        node = socket.gethostname()
        for worker, (queue, _host, fleet_host) in WORKERS.items():
            self._spawn(
                f"worker-{worker}",
                [
                    "celery",
                    "worker",
                    "--celery-hostname",
                    f"{worker}@{node}",
                    "--queues",
                    queue,
                    "--concurrency",
                    str(len(FLEET_DEVICES) if fleet_host else 2),
                    "--skip-serve-logs",
                    "--without-gossip",
                    "--without-mingle",
                ],
                worker=worker,
            )

    def check_alive(self) -> None:
        dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
        if dead:
            raise RuntimeError(f"components exited: {dead}")

    def wait_api(self, timeout: float = 180) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}/api/v2/version", timeout=5):
                    return
            except OSError:
                time.sleep(2)
        raise TimeoutError(f"api-server not up on port {self.api_port} after {timeout}s")

    def query(self, db: str, sql: str, params: tuple = ()) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.pg_url(db, "postgresql"), connect_timeout=5) as conn:
            return conn.execute(sql, params).fetchall()

    def stop(self) -> None:
        for _name, proc in self.procs.items():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):  # the group: task processes the component forked
                os.killpg(proc.pid, signal.SIGKILL)
        if self.redis_db is not None:
            import redis

            redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=self.redis_db).flushdb()
        with pg_admin() as admin:
            for db in self.created_dbs:
                admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        self.created_dbs.clear()

    def dump_logs(self, tail: int = 6000) -> str:
        parts = []
        for path in sorted(self.logs.glob("*.log")):
            parts.append(f"===== {path.name} (last {tail} chars)\n{path.read_text(errors='replace')[-tail:]}")
        task_logs = sorted((self.home / "logs").rglob("*.log")) if (self.home / "logs").exists() else []
        for path in task_logs:
            text = path.read_text(errors="replace")
            if "error" in text.lower() or "Traceback" in text:
                parts.append(f"===== task log {path.relative_to(self.home)}\n{text[-tail:]}")
        return "\n".join(parts)

    def cleanup_files(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
