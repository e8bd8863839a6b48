"""Retention: delete run directories, tensor caches and seed layouts that no kept run references.

What lives under ``artifacts_root`` (VALIDATION.ARTIFACTS_ROOT)::

    <run>/context.json            a run directory (written by prepare_run)
    <run>/storage.json            the cache directory and content fingerprint the run preprocessed into
    <run>/finished.json           written by finish_run: status, finish time, bytes under the run directory
    cache/<dataset>/              a tensor cache (manifest.json names its content fingerprint)
    cache/_seed_layouts/<fp>/     the seed's .bin layout of the cache content <fp>, shared by runs

Policy (``VALIDATION.RETENTION``): a finished run is kept when it is among the newest ``KEEP_RUNS`` finished
runs **or** finished less than ``KEEP_DAYS`` days ago (0 turns a criterion off). A run without
``finished.json`` is in progress and always kept, unless nothing under it changed for ``STALE_HOURS`` (its
process died; it is then treated as finished at its last change). Caches and seed layouts are kept when a
kept run references them, or when they changed within ``STALE_HOURS`` (being written right now); so are the
temporary folders of writers. Database rows are never deleted: history is small.

Races: :func:`collect` holds an exclusive lock (``.gc.lock`` under the root) while it decides and deletes;
:func:`registering` (a shared lock) wraps the creation of a run directory, so a run starting during a
collection waits for it, and a run registered before it is seen as in progress.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .storage import disk_usage, file_lock, human
from .utils import atomic_write_json, log

RUN_MARKER = "context.json"
STORAGE_REF = "storage.json"
FINISHED_MARKER = "finished.json"
GC_LOCK = ".gc.lock"
CACHE_DIR = "cache"
LAYOUTS_DIR = "_seed_layouts"
LEFTOVER_SUFFIXES = (".tmp", ".old")


@dataclass(frozen=True)
class Policy:
    """VALIDATION.RETENTION: KEEP_DAYS, KEEP_RUNS (0 = criterion off), STALE_HOURS."""

    keep_days: float
    keep_runs: int
    stale_hours: float = 24.0

    def __post_init__(self) -> None:
        if self.keep_days < 0 or self.keep_runs < 0 or self.stale_hours <= 0:
            raise ConfigError(
                f"retention: KEEP_DAYS and KEEP_RUNS must be >= 0 and STALE_HOURS > 0, got {self.keep_days}, "
                f"{self.keep_runs}, {self.stale_hours} (VALIDATION.RETENTION)"
            )

    @classmethod
    def from_cfg(cls, cfg: Any, keep_days: float | None = None, keep_runs: int | None = None) -> Policy:
        r = cfg.VALIDATION.RETENTION
        return cls(
            keep_days=float(r.KEEP_DAYS if keep_days is None else keep_days),
            keep_runs=int(r.KEEP_RUNS if keep_runs is None else keep_runs),
            stale_hours=float(r.STALE_HOURS),
        )


@dataclass
class Item:
    """One deleted (or, in a dry run, deletable) folder."""

    kind: str  # run | cache | seed layout | leftover
    path: str
    bytes: int
    reason: str


@dataclass
class GcReport:
    root: str
    dry_run: bool
    deleted: list[Item] = field(default_factory=list)
    kept_runs: list[str] = field(default_factory=list)
    in_progress: list[str] = field(default_factory=list)

    @property
    def freed_bytes(self) -> int:
        return sum(i.bytes for i in self.deleted)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "freed_bytes": self.freed_bytes}

    def lines(self) -> list[str]:
        verb = "would delete" if self.dry_run else "deleted"
        out = [f"{verb} {i.kind} {i.path} ({human(i.bytes)}): {i.reason}" for i in self.deleted]
        counts = {k: sum(1 for i in self.deleted if i.kind == k) for k in ("run", "cache", "seed layout", "leftover")}
        what = ", ".join(f"{n} {k}{'s' if n != 1 else ''}" for k, n in counts.items() if n) or "nothing"
        out.append(
            f"{'would free' if self.dry_run else 'freed'} {human(self.freed_bytes)} under {self.root} ({what}); "
            f"kept {len(self.kept_runs)} run(s), {len(self.in_progress)} in progress"
        )
        return out


@contextlib.contextmanager
def registering(root: str | os.PathLike[str]) -> Iterator[None]:
    """Hold while creating a run directory: a collection cannot run at the same time."""
    with file_lock(Path(root) / GC_LOCK, shared=True):
        yield


def record_storage(run_dir: str | os.PathLike[str], cache_dir: str | os.PathLike[str], fingerprint: str) -> None:
    """Note in the run directory which cache (and content) the run uses, so a collection keeps them."""
    atomic_write_json(Path(run_dir) / STORAGE_REF, {"cache_dir": str(cache_dir), "fingerprint": fingerprint})


def mark_finished(run_dir: str | os.PathLike[str], status: str) -> int:
    """Write ``finished.json`` (status, time, disk use) into the run directory; returns the bytes under it."""
    run_dir = Path(run_dir)
    used = disk_usage(run_dir)
    atomic_write_json(
        run_dir / FINISHED_MARKER,
        {"status": status, "finished_at": datetime.now(UTC).isoformat(), "disk_bytes": used},
    )
    return used


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _newest_mtime(path: Path) -> float:
    newest = 0.0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [*dirnames, *filenames, "."]:
            with contextlib.suppress(OSError):
                newest = max(newest, os.lstat(os.path.join(dirpath, name)).st_mtime)
    return newest


@dataclass
class _Run:
    path: Path
    context: dict[str, Any]
    storage: dict[str, Any] | None
    finished_at: float | None  # epoch seconds; None = in progress
    abandoned: bool = False


def _scan_runs(root: Path, now: float, stale_s: float) -> list[_Run]:
    runs = []
    for entry in sorted(root.iterdir()):
        ctx = _read_json(entry / RUN_MARKER) if entry.is_dir() and not entry.is_symlink() else None
        if ctx is None:
            continue
        fin = _read_json(entry / FINISHED_MARKER)
        finished_at = None
        abandoned = False
        if fin is not None:
            with contextlib.suppress(KeyError, TypeError, ValueError):
                finished_at = datetime.fromisoformat(fin["finished_at"]).timestamp()
            if finished_at is None:
                finished_at = (entry / FINISHED_MARKER).stat().st_mtime
        else:
            last = _newest_mtime(entry)
            if now - last > stale_s:
                finished_at, abandoned = last, True
        runs.append(_Run(entry, ctx, _read_json(entry / STORAGE_REF), finished_at, abandoned))
    return runs


def _fingerprint_of(cache_dir: Path) -> str | None:
    manifest = _read_json(cache_dir / "manifest.json")
    fp = manifest.get("fingerprint") if manifest else None
    return fp if isinstance(fp, str) else None


def collect(root: str | os.PathLike[str], policy: Policy, *, dry_run: bool = False) -> GcReport:
    """Apply ``policy`` under ``root`` (see the module docstring); delete (or, dry run, list) the rest."""
    root = Path(root).expanduser().absolute()
    report = GcReport(str(root), dry_run)
    if not root.is_dir():
        return report
    with file_lock(root / GC_LOCK):
        now = time.time()
        stale_s = policy.stale_hours * 3600
        runs = _scan_runs(root, now, stale_s)
        finished = sorted((r for r in runs if r.finished_at is not None), key=lambda r: -(r.finished_at or 0))
        kept = [r for r in runs if r.finished_at is None]
        report.in_progress = [str(r.path) for r in kept]
        for i, r in enumerate(finished):
            age_days = (now - (r.finished_at or now)) / 86400
            if i < policy.keep_runs or (policy.keep_days and age_days < policy.keep_days):
                kept.append(r)
            else:
                why = f"finished {age_days:.1f} days ago" + (" (abandoned: no change since)" if r.abandoned else "")
                why += f"; not among the newest {policy.keep_runs} and older than {policy.keep_days:g} days"
                _delete(report, "run", r.path, why)
        report.kept_runs = [str(r.path) for r in kept]

        caches, fingerprints = set(), set()
        for r in kept:
            for ref in (r.context, r.storage or {}):
                if ref.get("cache_dir"):
                    caches.add(Path(ref["cache_dir"]).absolute())
            if r.storage and r.storage.get("fingerprint"):
                fingerprints.add(str(r.storage["fingerprint"])[:32])
        fingerprints |= {fp[:32] for c in caches if (fp := _fingerprint_of(c))}

        cache_root = root / CACHE_DIR
        if cache_root.is_dir():
            for entry in sorted(cache_root.iterdir()):
                if entry.name == LAYOUTS_DIR or not entry.is_dir():
                    continue
                if entry.name.startswith(".") and entry.name.endswith(LEFTOVER_SUFFIXES):
                    _delete_if_stale(report, "leftover", entry, now, stale_s, "a writer's unfinished temporary folder")
                elif entry.absolute() not in caches:
                    _delete_if_stale(report, "cache", entry, now, stale_s, "no kept run uses this cache")
            layouts = cache_root / LAYOUTS_DIR
            if layouts.is_dir():
                for entry in sorted(layouts.iterdir()):
                    if not entry.is_dir():
                        continue
                    if entry.name.startswith("."):
                        _delete_if_stale(report, "leftover", entry, now, stale_s, "a writer's unfinished layout")
                    elif entry.name not in fingerprints:
                        _delete_if_stale(report, "seed layout", entry, now, stale_s, "no kept run uses this content")
    for line in report.lines():
        log.info("gc: %s", line)
    return report


def _delete_if_stale(report: GcReport, kind: str, path: Path, now: float, stale_s: float, why: str) -> None:
    if now - _newest_mtime(path) <= stale_s:  # being written or used right now
        return
    _delete(report, kind, path, why)


def _delete(report: GcReport, kind: str, path: Path, why: str) -> None:
    size = disk_usage(path)
    report.deleted.append(Item(kind, str(path), size, why))
    if not report.dry_run:
        shutil.rmtree(path, ignore_errors=True)


def register(subparsers: Any) -> Any:
    """Add ``reid-validate gc [--keep-days N] [--keep-runs N] [--dry-run] [--config-file X] [KEY VALUE ...]``."""
    p = subparsers.add_parser(
        "gc",
        help="delete old run directories, caches and seed layouts (database rows are kept)",
        description=__doc__.split("\n\n")[2],
    )
    p.add_argument("--keep-days", type=float, default=None, help="default VALIDATION.RETENTION.KEEP_DAYS")
    p.add_argument("--keep-runs", type=int, default=None, help="default VALIDATION.RETENTION.KEEP_RUNS")
    p.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    p.add_argument("--config-file", "--config_file", dest="config_file", default=None, help="yacs yml")
    p.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides")
    p.set_defaults(func=cli_gc)
    return p


def cli_gc(args: Any) -> int:
    """Handler of ``reid-validate gc``."""
    from .config import artifacts_root, load_config

    cfg = load_config(args.config_file, list(args.opts or ()))
    report = collect(artifacts_root(cfg), Policy.from_cfg(cfg, args.keep_days, args.keep_runs), dry_run=args.dry_run)
    print("\n".join(report.lines()))
    return 0
