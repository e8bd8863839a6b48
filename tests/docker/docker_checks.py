"""Offline readers for docker/: Dockerfile instructions, Compose variable interpolation, .env files,
.dockerignore allow-lists and the lock file. Small and strict: anything they do not understand fails."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"


@dataclass(frozen=True)
class Instruction:
    line: int
    name: str  # upper case: FROM, COPY, RUN, CMD, ...
    args: str


def dockerfile_instructions(path: Path) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped (hadolint checks the syntax)."""
    out: list[Instruction] = []
    buf, start = "", 0
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        name, _, args = buf.partition(" ")
        out.append(Instruction(start, name.upper(), args.strip()))
        buf = ""
    return out


def copy_sources(ins: Instruction) -> tuple[list[str], str]:
    """(sources, destination) of a COPY/ADD from the build context (no --from)."""
    parts = json.loads(ins.args) if ins.args.startswith("[") else shlex.split(ins.args)
    flags = [p for p in parts if p.startswith("--")]
    if any(f.startswith("--from") for f in flags):
        return [], ""
    paths = [p for p in parts if not p.startswith("--")]
    return paths[:-1], paths[-1]


def exec_form(ins: Instruction) -> list[str]:
    return json.loads(ins.args)


_VAR = re.compile(
    r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    pass


def variables_used(text: str) -> set[str]:
    """Every ${NAME...} / $NAME in compose text ($$ escapes excluded)."""
    return {m.group("name") or m.group("bare") for m in _VAR.finditer(text) if m.group(0) != "$$"}


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose interpolation: ${V}, ${V:-d}, ${V-d}, ${V:?err}, ${V?err}, $V, $$ -> $."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("name") or m.group("bare")
        op, arg = m.group("op"), m.group("arg") or ""
        have = name in env
        val = env.get(name, "")
        if op == ":-":
            return val if val else arg
        if op == "-":
            return val if have else arg
        if op == ":?":
            if not val:
                raise InterpolationError(f"required variable {name} is empty: {arg}")
            return val
        if op == "?":
            if not have:
                raise InterpolationError(f"required variable {name} is unset: {arg}")
            return val
        return val

    return _VAR.sub(sub, value)


def interpolate_tree(node: object, env: dict[str, str]) -> object:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_tree(v, env) for v in node]
    if isinstance(node, dict):
        return {k: interpolate_tree(v, env) for k, v in node.items()}
    return node


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (comments and blank lines skipped), as docker compose reads .env."""
    env: dict[str, str] = {}
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"{path.name}:{n}: not KEY=VALUE: {raw!r}")
        env[key] = value
    return env


def dockerignore_allows(ignore_file: Path, rel: str) -> bool:
    """Whether ``rel`` (a path in the build context) survives the .dockerignore (last match wins)."""
    allowed = True
    for raw in ignore_file.read_text(encoding="utf-8").splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        candidates = [rel] + [str(Path(*Path(rel).parts[:i])) for i in range(1, len(Path(rel).parts))]
        if any(
            fnmatch.fnmatchcase(c, pattern) or fnmatch.fnmatchcase(c, pattern.replace("**/", "")) for c in candidates
        ):
            allowed = negate
    return allowed


def lock_versions(path: Path) -> dict[str, str]:
    """``name==version`` lines of a pip freeze style lock, names normalised (PEP 503)."""
    out: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if "==" in line and not line.startswith("-"):
            name, _, version = line.partition("==")
            out[re.sub(r"[-_.]+", "-", name.split("[")[0].strip()).lower()] = version.split(";")[0].strip()
    return out
