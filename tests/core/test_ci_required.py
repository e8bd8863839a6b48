"""Under CI=true a test skipped for a missing PostgreSQL, Redis or chromium fails; other skips stay skips."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]

SAMPLE = """
import pytest

def test_needs_postgres():
    pytest.skip("PostgreSQL on 127.0.0.1:5432 unreachable: connection refused")

def test_needs_chromium():
    pytest.skip("Debian's chromium is not installed: apt-get install -y chromium chromium-driver")

def test_optional_package():
    pytest.skip("openvino is not installed")
"""


def _run(tmp_path: Path, ci: str | None) -> str:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = str(TESTS)  # the suite's conftest.py, loaded as a plug-in
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
         str(tmp_path / "test_sample.py")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    return proc.stdout.strip().splitlines()[-1]


def test_ci_turns_missing_service_skips_into_failures(tmp_path):
    assert _run(tmp_path, "true").startswith("2 failed, 1 skipped")
    assert _run(tmp_path, None).startswith("3 skipped")
