"""Parallel decode + resize of many images into rows of one uint8 array file (threads or processes)."""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..utils import Progress
from .image import BadImage, decode_resize_into, read_bytes
from .settings import CHUNK

#: per chunk: sha256 of each input (None when unreadable) and (index, reason) of the unreadable ones
ChunkResult = tuple[list[str | None], list[tuple[int, str]]]


def default_workers() -> int:
    """One worker per core this process may run on."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def _cv2() -> Any:
    import cv2

    return cv2


def auto_backend(n: int, workers: int) -> str:
    """'process' (forked workers) for jobs big enough to share, where fork exists; else 'thread'.

    Pillow parses JPEG headers in Python with the GIL held, so threads scale less well than processes (bench
    figures in docs/performance.md); a fork costs milliseconds, nothing to re-import.
    """
    import multiprocessing as mp

    if workers > 1 and n >= 4 * CHUNK and "fork" in mp.get_all_start_methods():
        return "process"
    return "thread"


_TLS = threading.local()


def _chunk_buffer(n: int, height: int, width: int) -> np.ndarray:
    """A per-thread reusable (n, H, W, 3) uint8 buffer (reused so its pages stay mapped and hot)."""
    buf = getattr(_TLS, "buf", None)
    if buf is None or buf.shape[0] < n or buf.shape[1:] != (height, width, 3):
        buf = _TLS.buf = np.empty((max(n, CHUNK), height, width, 3), dtype=np.uint8)
    return buf[:n]


def _work_chunk(paths: Sequence[str], start: int, fd: int, offset: int, height: int, width: int) -> ChunkResult:
    """Decode+resize ``paths`` and write them as rows ``start...`` of the array file open at ``fd``.

    Rows go through a hot per-thread buffer and one ``os.pwrite`` per chunk (page-faulting fresh memmap
    pages per image costs more than decoding).
    """
    hashes: list[str | None] = []
    bad: list[tuple[int, str]] = []
    buf = _chunk_buffer(len(paths), height, width)
    for i, path in enumerate(paths):
        try:
            data = read_bytes(path)
            decode_resize_into(data, height, width, buf[i])
            hashes.append(hashlib.sha256(data).hexdigest())
        except BadImage as exc:
            hashes.append(None)
            bad.append((start + i, str(exc.args[0])))
            buf[i] = 0
        except Exception as exc:  # anything else from the decoder is a bad image too, never a crash
            hashes.append(None)
            bad.append((start + i, f"{type(exc).__name__}: {exc}"))
            buf[i] = 0
    view = memoryview(buf).cast("B")
    pos = offset + start * height * width * 3
    while view:
        written = os.pwrite(fd, view, pos)
        view, pos = view[written:], pos + written
    return hashes, bad


# Process-pool worker state (opened once per worker).
_PROC: dict[str, Any] = {}


def _proc_init(array_path: str, offset: int, height: int, width: int) -> None:
    _cv2().setNumThreads(1)
    _PROC["fd"] = os.open(array_path, os.O_WRONLY)
    _PROC["args"] = (offset, height, width)


def _proc_chunk(paths: Sequence[str], start: int) -> ChunkResult:
    return _work_chunk(paths, start, _PROC["fd"], *_PROC["args"])


def fill_array(
    paths: Sequence[str],
    array_path: Path,
    offset: int,
    height: int,
    width: int,
    workers: int,
    backend: str,
    progress: bool,
) -> ChunkResult:
    """Write every image of ``paths`` as a row of the (N, H, W, 3) uint8 array stored at ``offset`` in
    ``array_path``; unreadable ones become zero rows and are reported (sorted by index)."""
    n = len(paths)
    chunks = [(s, min(s + CHUNK, n)) for s in range(0, n, CHUNK)]
    hashes: list[str | None] = [None] * n
    bad: list[tuple[int, str]] = []
    bar = Progress(n, "preprocess") if progress else None

    def collect(s: int, res: ChunkResult) -> None:
        hashes[s : s + len(res[0])] = res[0]
        bad.extend(res[1])
        if bar is not None:
            bar.update(len(res[0]))

    cv2 = _cv2()
    prev_threads = cv2.getNumThreads()
    fd = os.open(array_path, os.O_WRONLY)
    try:
        cv2.setNumThreads(1)  # one image per worker; OpenCV's own pool would only contend with ours
        if workers <= 1 or len(chunks) <= 1:
            for s, e in chunks:
                collect(s, _work_chunk(paths[s:e], s, fd, offset, height, width))
        elif backend == "process":
            import multiprocessing as mp

            ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
            with cf.ProcessPoolExecutor(
                workers, mp_context=ctx, initializer=_proc_init, initargs=(str(array_path), offset, height, width)
            ) as ex:
                futs = {ex.submit(_proc_chunk, paths[s:e], s): s for s, e in chunks}
                for fut in cf.as_completed(futs):
                    collect(futs[fut], fut.result())
        else:
            with cf.ThreadPoolExecutor(workers) as ex:
                futs = {ex.submit(_work_chunk, paths[s:e], s, fd, offset, height, width): s for s, e in chunks}
                for fut in cf.as_completed(futs):
                    collect(futs[fut], fut.result())
    finally:
        os.close(fd)
        cv2.setNumThreads(prev_threads)
        if bar is not None:
            bar.close()
    bad.sort()
    return hashes, bad
