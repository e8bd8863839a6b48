"""The CANN environment the Ascend tools run in, and running one tool with its output kept in a log file."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from reid_tasks.errors import BenchmarkError, TargetUnavailable
from reid_tasks.utils import atomic_write_text, tail

_INFO_FILES = ("version.info", "*-linux/ascend_toolkit_install.info", "atc/version.info")
_DROP_ENV = {"_", "SHLVL", "PWD", "OLDPWD"}
#: these values are shown quoted in the recorded command line, as the seed writes them
_QUOTED_FLAGS = ("--input_shape", "--auto_tune_mode")
_VERSION_RE = re.compile(r"^\s*version\s*=\s*\[?([^\]\s]+)", re.IGNORECASE | re.MULTILINE)


def cann_environment(install_path: str | os.PathLike[str], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The CANN tool environment merged over ``base`` (default os.environ).

    ``${install_path}/set_env.sh`` is sourced in a bash subprocess and its environment captured (``env -0``);
    without it the seed's variables are set: PATH (python3.7.5, atc/ccec_compiler/bin, atc/bin), PYTHONPATH
    (atc/python/site-packages), LD_LIBRARY_PATH (atc/lib64, acllib/lib64) -- existing directories are
    prepended -- and ASCEND_OPP_PATH=${install_path}/opp, ASCEND_AICPU_PATH=${install_path}/.
    """
    env = dict(os.environ if base is None else base)
    ip = Path(install_path)
    set_env = ip / "set_env.sh"
    if set_env.is_file():
        script = 'source "$1" 1>&2; rc=$?; env -0; exit $rc'
        try:
            proc = subprocess.run(
                ["bash", "-c", script, "reid-set-env", str(set_env)],
                env=env,
                capture_output=True,
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise TargetUnavailable(f"cannot source {set_env}: {exc}") from exc
        if proc.returncode != 0:
            raise TargetUnavailable(
                f"sourcing {set_env} failed (exit {proc.returncode}): {tail(proc.stderr.decode('utf-8', 'replace'))}"
            )
        captured = {}
        for entry in proc.stdout.decode("utf-8", "replace").split("\0"):
            key, sep, value = entry.partition("=")
            if sep and key and key not in _DROP_ENV:
                captured[key] = value
        return {**env, **captured}

    def prepend(var: str, dirs: Sequence[Path | str]) -> None:
        existing = [str(d) for d in dirs if Path(d).is_dir()]
        old = env.get(var, "")
        if existing:
            env[var] = ":".join(existing + ([old] if old else []))

    prepend("PATH", ["/usr/local/python3.7.5/bin", ip / "atc" / "ccec_compiler" / "bin", ip / "atc" / "bin"])
    prepend("PYTHONPATH", [ip / "atc" / "python" / "site-packages"])
    prepend("LD_LIBRARY_PATH", [ip / "atc" / "lib64", ip / "acllib" / "lib64"])
    env["ASCEND_OPP_PATH"] = str(ip / "opp")
    env["ASCEND_AICPU_PATH"] = str(ip) + "/"
    return env


def parse_version_info(text: str) -> str | None:
    """``Version=5.0.1`` (version.info) or ``version=5.0.1`` (ascend_toolkit_install.info) -> ``5.0.1``."""
    m = _VERSION_RE.search(text)
    return m.group(1) if m else None


def cann_version(install_path: str | os.PathLike[str]) -> str | None:
    """CANN/ATC version from ``version.info`` (or the toolkit's ascend_toolkit_install.info) under the install path."""
    ip = Path(install_path)
    for pattern in _INFO_FILES:
        for p in sorted(ip.glob(pattern)):
            with contextlib.suppress(OSError):
                v = parse_version_info(p.read_text(encoding="utf-8", errors="replace"))
                if v:
                    return v
    return None


def command_line(argv: Sequence[str]) -> str:
    """A shell command line for ``argv``, written the way the seed writes atc's (``--input_shape="..."``)."""
    parts = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key in _QUOTED_FLAGS and '"' not in value and "$" not in value and "\\" not in value:
            parts.append(f'{key}="{value}"')
        else:
            parts.append(shlex.quote(arg))
    return " ".join(parts)


class Cann:
    """The CANN install a host's tools come from: its environment (cached while the install path and
    os.environ are unchanged), tool lookup on its PATH and its version."""

    def __init__(self, install_path: str | os.PathLike[str]) -> None:
        self.install_path = Path(install_path)
        self._cache: tuple[tuple, dict[str, str]] | None = None

    def environment(self) -> dict[str, str]:
        key = (str(self.install_path), tuple(sorted(os.environ.items())))
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, cann_environment(self.install_path))
        return self._cache[1]

    def which(self, tool: str) -> str | None:
        if os.sep in tool:
            return tool if os.access(tool, os.X_OK) else None
        return shutil.which(tool, path=self.environment().get("PATH", ""))

    def source(self) -> str:
        """Where the environment comes from (for messages)."""
        set_env = self.install_path / "set_env.sh"
        return f"sourced {set_env}" if set_env.is_file() else f"no {set_env}; seed variables"

    def version(self) -> str:
        return cann_version(self.install_path) or "unknown"


@dataclass
class ToolRun:
    """One finished tool process: its command line, exit status, merged output and the log that keeps it."""

    line: str
    returncode: int
    output: str
    wall_s: float
    log_path: Path

    def error(self, what: str) -> BenchmarkError:
        return BenchmarkError(f"{what}: {self.line}\nlog: {self.log_path}\n{tail(self.output)}")


def run_tool(
    argv: Sequence[str],
    *,
    line: str,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,
    log_path: Path,
    error: type[Exception],
    what: str,
) -> ToolRun:
    """Run a tool (stderr merged into stdout), keep its full output in ``log_path``; raise ``error`` on a timeout."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            list(argv),
            cwd=str(cwd),
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise TargetUnavailable(f"{what}: command not found: {argv[0]} ({line})") from exc
    except subprocess.TimeoutExpired as exc:
        out = exc.output.decode("utf-8", "replace") if isinstance(exc.output, bytes) else (exc.output or "")
        atomic_write_text(log_path, f"$ {line}\n# cwd: {cwd}\n# timed out after {timeout:g} s\n{out}")
        raise error(f"{what} timed out after {timeout:g} s: {line}\nlog: {log_path}\n{tail(out)}") from exc
    wall = time.perf_counter() - t0
    atomic_write_text(log_path, f"$ {line}\n# cwd: {cwd}\n# exit: {proc.returncode}, {wall:.3f} s\n{proc.stdout}")
    return ToolRun(line, proc.returncode, proc.stdout, wall, log_path)
