"""Disk housekeeping shared by the steps: free-space checks before big writes, disk use of a tree, file locks."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import ReidError

#: writes at least this big check free space first (smaller ones cannot meaningfully fill a volume)
CHECK_ABOVE_BYTES = 256 * 1024**2
#: kept free beyond the write itself, so a step never leaves the volume completely full
HEADROOM_BYTES = 64 * 1024**2


class DiskSpaceError(ReidError):
    """Not enough free space for a write (or the volume filled up while writing)."""


def _existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes available to this user on the volume holding ``path`` (or its nearest existing parent)."""
    st = os.statvfs(_existing(Path(path)))
    return st.f_bavail * st.f_frsize


def human(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def require_free_space(path: str | os.PathLike[str], needed: int, what: str) -> None:
    """DiskSpaceError (needed vs free, path) when writing ``needed`` bytes of ``what`` under ``path`` would
    not fit with :data:`HEADROOM_BYTES` to spare; writes under :data:`CHECK_ABOVE_BYTES` are not checked."""
    if needed < CHECK_ABOVE_BYTES:
        return
    free = free_bytes(path)
    if needed + HEADROOM_BYTES > free:
        raise DiskSpaceError(
            f"not enough free space for {what} at {Path(path).absolute()}: needs {human(needed)} "
            f"(+{human(HEADROOM_BYTES)} headroom), {human(free)} free. Free space (reid-validate gc) or point "
            "VALIDATION.ARTIFACTS_ROOT at a larger volume."
        )


@contextlib.contextmanager
def disk_full_as_error(path: str | os.PathLike[str], what: str) -> Iterator[None]:
    """Turn ENOSPC / EDQUOT raised inside the block into a DiskSpaceError naming ``what`` and ``path``."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise DiskSpaceError(
            f"disk full while writing {what} at {Path(path).absolute()} ({exc.strerror}); nothing was kept. "
            f"{human(free_bytes(path))} free now."
        ) from exc


def disk_usage(path: str | os.PathLike[str]) -> int:
    """Bytes allocated on disk under ``path`` (as ``du``: hard links once, symlinks not followed); 0 if absent."""
    total = 0
    seen: set[tuple[int, int]] = set()
    stack = [Path(path)]
    while stack:
        p = stack.pop()
        try:
            st = p.lstat()
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        total += st.st_blocks * 512
        if p.is_dir() and not p.is_symlink():
            with contextlib.suppress(OSError):
                stack.extend(p.iterdir())
    return total


@contextlib.contextmanager
def file_lock(lock_path: str | os.PathLike[str], shared: bool = False, wait: bool = True) -> Iterator[bool]:
    """An ``flock`` on ``lock_path`` (created if missing), released when the block ends or the process dies.

    Yields True when held; with ``wait=False`` yields False instead of blocking when another process holds it.
    """
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        flags = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
        try:
            fcntl.flock(fd, flags)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)
