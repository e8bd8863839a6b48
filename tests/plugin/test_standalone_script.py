"""scripts/airflow_standalone.sh (`make airflow`) with a stand-in `airflow` command: parallelism follows the
cores, and TERM / INT stop it with every process it started, including one that left its process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# `airflow standalone` stand-in: records its environment, starts a child in its process group and one in a
# session of its own (as a supervisor may), and waits; every other subcommand succeeds at once.
FAKE_AIRFLOW = """#!/usr/bin/env bash
if [ "$1" != standalone ]; then exit 0; fi
echo "$AIRFLOW__CORE__PARALLELISM $AIRFLOW__API__WORKERS" > "$FAKE_OUT/env"
sleep 300 & echo $! >> "$FAKE_OUT/pids"
setsid sleep 300 & echo $! >> "$FAKE_OUT/pids"
echo $$ >> "$FAKE_OUT/pids"
touch "$FAKE_OUT/started"
wait
"""


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stops_airflow_and_all_its_children(tmp_path, sig):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "airflow").write_text(FAKE_AIRFLOW)
    (bin_dir / "airflow").chmod(0o755)
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')  # keeps the venv
    (bin_dir / "python").chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "REID_"))}
    env.update(
        VENV_BIN=str(bin_dir),
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        REID_DATA_DIR=str(tmp_path / "data"),
        REID_STOP_TIMEOUT_S="10",
        FAKE_OUT=str(out),
    )
    proc = subprocess.Popen(
        ["bash", str(ROOT / "scripts" / "airflow_standalone.sh")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "started").exists():
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the stand-in airflow standalone never started"
            time.sleep(0.2)
        pids = [int(p) for p in (out / "pids").read_text().split()]
        assert all(_running(p) for p in pids)
        proc.send_signal(sig)
        rc = proc.wait(timeout=60)
        log = proc.stdout.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert rc == 128 + sig, log
    assert [p for p in pids if _running(p)] == [], log
    parallelism, api_workers = (out / "env").read_text().split()
    assert int(parallelism) == os.cpu_count() and api_workers == "1"
    assert f"executor parallelism {os.cpu_count()}" in log
