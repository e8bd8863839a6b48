"""The tensor cache: every image decoded and resized once into ONE uint8 NHWC array at model size.

:func:`preprocess_dataset` fills ``images.u8.npy`` (96 KiB per 256x128 image instead of 384 KiB of float32)
and ``manifest.json`` (settings, items, fingerprints, unreadable images) in a temporary folder renamed into
place, and reuses an existing cache whose inputs and settings are unchanged. :class:`TensorCache` serves
normalised float32 NCHW batches from it and the seed's per-image layout (:mod:`.seed_layout`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import PreprocessError
from ..storage import disk_full_as_error, require_free_space
from ..utils import atomic_write_json, replace_dir
from .seed_layout import SeedLayout, seed_stem, shared_layout_dir, write_seed_layout
from .settings import ARRAY_NAME, CACHE_VERSION, MANIFEST_NAME, Settings, normalise_with
from .workers import auto_backend, default_workers, fill_array

log = logging.getLogger("reid_tasks.preprocess")


class CacheItem(NamedTuple):
    """One cached image: source path, person id, 0-based camera id, 'query' | 'gallery'."""

    path: str
    pid: int
    camid: int
    split: str


def _as_items(items: Any) -> tuple[list[CacheItem], dict[str, Any] | None]:
    from ..datasets import Market1501

    if isinstance(items, Market1501):
        out = [CacheItem(p, pid, cam, "query") for p, pid, cam in items.query]
        out += [CacheItem(p, pid, cam, "gallery") for p, pid, cam in items.gallery]
        return out, items.fingerprint()
    out = []
    for it in items:
        t = tuple(it)
        if len(t) == 3:
            path, pid, camid = t
            split = "gallery" if Path(path).parent.name == "bounding_box_test" else "query"
        elif len(t) == 4:
            path, pid, camid, split = t
        else:
            raise PreprocessError(f"item {it!r}: expected (path, pid, camid[, split])")
        if split not in ("query", "gallery"):
            raise PreprocessError(f"item {path}: split must be 'query' or 'gallery', got {split!r}")
        out.append(CacheItem(str(Path(path).absolute()), int(pid), int(camid), split))
    return out, None


def _num_query(items: Sequence[CacheItem]) -> int:
    nq = sum(1 for it in items if it.split == "query")
    if any(it.split != "query" for it in items[:nq]):
        raise PreprocessError("items must list every 'query' image before the 'gallery' images")
    return nq


def _source_fingerprint(items: Sequence[CacheItem]) -> str:
    """sha256 over (path, size, mtime_ns, pid, camid, split) of every input; a missing file is recorded as such."""
    h = hashlib.sha256()
    for it in items:
        try:
            st = os.stat(it.path)
            sig = f"{st.st_size} {st.st_mtime_ns}"
        except OSError:
            sig = "missing"
        h.update(f"{it.path}\0{sig}\0{it.pid} {it.camid} {it.split}\n".encode())
    return h.hexdigest()


def _content_fingerprint(settings: dict[str, Any], records: Sequence[dict[str, Any]]) -> str:
    """sha256 over the settings and each kept item's (file name, pid, camid, split, file sha256)."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for r in records:
        h.update(f"{os.path.basename(r['path'])} {r['pid']} {r['camid']} {r['split']} {r['sha256']}\n".encode())
    return h.hexdigest()


def _read_manifest(cache_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((cache_dir / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None


def _fill_and_pack(
    tmp: Path,
    cache_items: Sequence[CacheItem],
    h: int,
    w: int,
    workers: int,
    backend: str,
    progress: bool,
    skip_bad: bool,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Fill ``tmp/images.u8.npy`` with every readable image (in order); (records of the kept, bad ones)."""
    n = len(cache_items)
    array_path = tmp / ARRAY_NAME
    arr = np.lib.format.open_memmap(array_path, mode="w+", dtype=np.uint8, shape=(n, h, w, 3))
    offset = int(arr.offset)
    del arr  # rows are written with pwrite by the workers
    hashes, bad_idx = fill_array([it.path for it in cache_items], array_path, offset, h, w, workers, backend, progress)
    bad = [{"path": cache_items[i].path, "reason": reason} for i, reason in bad_idx]
    if bad and not skip_bad:
        listing = "\n".join(f"  {b['path']}: {b['reason']}" for b in bad)
        raise PreprocessError(
            f"{len(bad)} of {n} images cannot be read (use --skip-bad / skip_bad=True to leave them out "
            f"and record them):\n{listing}"
        )
    keep = [i for i in range(n) if hashes[i] is not None]
    if bad:
        if not keep:
            raise PreprocessError(f"all {n} images are unreadable; first: {bad[0]['path']}: {bad[0]['reason']}")
        arr = np.load(array_path, mmap_mode="r")
        packed_path = tmp / (ARRAY_NAME + ".packed")
        packed = np.lib.format.open_memmap(packed_path, mode="w+", dtype=np.uint8, shape=(len(keep), h, w, 3))
        for j, i in enumerate(keep):
            packed[j] = arr[i]
        packed.flush()
        del arr, packed
        os.replace(packed_path, array_path)
    records = [
        {
            "path": cache_items[i].path,
            "pid": cache_items[i].pid,
            "camid": cache_items[i].camid,
            "split": cache_items[i].split,
            "sha256": hashes[i],
        }
        for i in keep
    ]
    return records, bad


def preprocess_dataset(
    items: Any,
    out_dir: str | os.PathLike[str],
    cfg: Any,
    workers: int | None = None,
    skip_bad: bool = False,
    progress: bool = True,
    backend: str = "auto",
) -> TensorCache:
    """Preprocess ``items`` into a tensor cache at ``out_dir`` (reused when inputs and settings are unchanged).

    ``items``: a :class:`~reid_tasks.datasets.Market1501` (query then gallery) or a sequence of
    ``ImageItem``/``(path, pid, camid[, split])`` (split defaults to 'gallery' for files in a
    ``bounding_box_test`` folder, else 'query'). ``workers``: parallel workers, ``None``/0 = one per core;
    ``backend``: "thread", "process" (forked) or "auto" (processes for jobs of >= 128 images where fork
    exists, threads otherwise; same bytes either way). Unreadable or corrupt images raise
    :class:`PreprocessError` listing every one with its reason; with ``skip_bad`` they are left out and
    recorded in the manifest and on ``cache.bad``. The cache is built in a temporary folder beside
    ``out_dir`` and renamed into place.
    """
    t0 = time.perf_counter()
    settings = Settings.from_cfg(cfg)
    cache_items, dataset_fp = _as_items(items)
    if not cache_items:
        raise PreprocessError("nothing to preprocess: no images given")
    num_query = _num_query(cache_items)
    if backend not in ("auto", "thread", "process"):
        raise PreprocessError(f"backend must be 'auto', 'thread' or 'process', got {backend!r}")
    out_dir = Path(out_dir).expanduser().absolute()
    source_fp = _source_fingerprint(cache_items)
    sdict = settings.to_dict()

    old = _read_manifest(out_dir)
    if (
        old is not None
        and old.get("version") == CACHE_VERSION
        and old.get("settings") == sdict
        and old.get("source", {}).get("fingerprint") == source_fp
        and (skip_bad or not old.get("bad"))
    ):
        try:
            cache = TensorCache.open(out_dir)
        except PreprocessError as exc:
            log.warning("rebuilding unusable cache %s: %s", out_dir, exc)
        else:
            log.info("reusing tensor cache %s (%d images, inputs and settings unchanged)", out_dir, len(cache))
            cache.reused = True
            return cache

    n = len(cache_items)
    h, w = settings.height, settings.width
    workers = workers or default_workers()
    if backend == "auto":
        backend = auto_backend(n, workers)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    require_free_space(out_dir.parent, n * h * w * 3, f"the tensor cache of {n} images")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        with disk_full_as_error(out_dir.parent, "the tensor cache"):
            records, bad = _fill_and_pack(tmp, cache_items, h, w, workers, backend, progress, skip_bad)
        kept_query = sum(1 for r in records if r["split"] == "query")
        manifest = {
            "format": "reid-validate tensor cache",
            "version": CACHE_VERSION,
            "settings": sdict,
            "source": {"fingerprint": source_fp, "count": n, "num_query": num_query, "dataset": dataset_fp},
            "fingerprint": _content_fingerprint(sdict, records),
            "count": len(records),
            "num_query": kept_query,
            "shape": [len(records), h, w, 3],
            "items": records,
            "bad": bad,
            "num_bad": len(bad),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "elapsed_s": round(time.perf_counter() - t0, 3),
            "workers": workers,
            "backend": backend,
        }
        atomic_write_json(tmp / MANIFEST_NAME, manifest)
        replace_dir(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if bad:
        log.warning("preprocess: left out %d unreadable image(s), recorded in %s", len(bad), out_dir / MANIFEST_NAME)
    return TensorCache.open(out_dir)


class TensorCache:
    """Read side of a tensor cache: uint8 NHWC images at model size + manifest.

    ``batch(start, stop)`` gives normalised float32 NCHW, bit-identical to :func:`preprocess_image`.
    """

    def __init__(self, cache_dir: Path, manifest: dict[str, Any], array: np.ndarray) -> None:
        self.dir = cache_dir
        self.manifest = manifest
        self._array = array
        self.settings = Settings.from_manifest(manifest["settings"])
        self.height, self.width = self.settings.height, self.settings.width
        self.mean, self.std = self.settings.mean, self.settings.std
        self._scale, self._offset = self.settings.scale_offset()
        self.items: list[CacheItem] = [
            CacheItem(r["path"], int(r["pid"]), int(r["camid"]), r["split"]) for r in manifest["items"]
        ]
        self.num_query = int(manifest["num_query"])
        self.pids = np.array([it.pid for it in self.items], dtype=np.int64)
        self.camids = np.array([it.camid for it in self.items], dtype=np.int64)
        self.fingerprint: str = manifest["fingerprint"]
        self.bad: list[dict[str, str]] = list(manifest.get("bad", []))
        self.reused = False

    @classmethod
    def open(cls, cache_dir: str | os.PathLike[str]) -> TensorCache:
        """Open and validate a cache folder; PreprocessError naming the problem if it is broken."""
        cache_dir = Path(cache_dir).expanduser().absolute()
        mpath = cache_dir / MANIFEST_NAME
        try:
            manifest = json.loads(mpath.read_text())
        except FileNotFoundError:
            raise PreprocessError(f"not a tensor cache (no {MANIFEST_NAME}): {cache_dir}") from None
        except (OSError, ValueError) as exc:
            raise PreprocessError(f"{mpath}: unreadable manifest: {exc}") from exc
        if not isinstance(manifest, dict) or manifest.get("version") != CACHE_VERSION:
            got = manifest.get("version") if isinstance(manifest, dict) else type(manifest).__name__
            raise PreprocessError(f"{mpath}: unsupported cache version {got!r} (expected {CACHE_VERSION})")
        try:
            h, w = (int(v) for v in manifest["settings"]["size"])
            count, items, nq = int(manifest["count"]), manifest["items"], int(manifest["num_query"])
        except (KeyError, TypeError, ValueError) as exc:
            raise PreprocessError(f"{mpath}: malformed manifest ({type(exc).__name__}: {exc})") from exc
        if len(items) != count or not 0 <= nq <= count:
            raise PreprocessError(f"{mpath}: count {count} / num_query {nq} disagree with {len(items)} items")
        apath = cache_dir / ARRAY_NAME
        try:
            array = np.load(apath, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise PreprocessError(f"{apath}: cannot open image array: {exc}") from exc
        if array.dtype != np.uint8 or array.shape != (count, h, w, 3):
            raise PreprocessError(
                f"{apath}: array is {array.dtype}{list(array.shape)}, manifest says uint8{[count, h, w, 3]}"
            )
        try:
            return cls(cache_dir, manifest, array)
        except (KeyError, TypeError, ValueError) as exc:
            raise PreprocessError(f"{mpath}: malformed manifest ({type(exc).__name__}: {exc})") from exc

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"TensorCache({str(self.dir)!r}, n={len(self)}, num_query={self.num_query}, {self.height}x{self.width})"

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(N, 3, H, W) of the float32 tensor the cache represents."""
        return (len(self), 3, self.height, self.width)

    def _check_range(self, start: int, stop: int) -> None:
        if not 0 <= start <= stop <= len(self):
            raise PreprocessError(f"{self.dir}: range [{start}, {stop}) outside 0..{len(self)}")

    def uint8(self, start: int, stop: int) -> np.ndarray:
        """Raw resized RGB uint8 NHWC images [start, stop) (a read-only memmap view)."""
        self._check_range(start, stop)
        return self._array[start:stop]

    def batch(self, start: int, stop: int) -> np.ndarray:
        """Normalised float32 NCHW images [start, stop)."""
        self._check_range(start, stop)
        return normalise_with(self._array[start:stop], self._scale, self._offset)

    def iter_batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """float32 NCHW batches in order; the last one may be short."""
        if batch_size < 1:
            raise PreprocessError(f"batch size must be >= 1, got {batch_size}")
        for s in range(0, len(self), batch_size):
            yield self.batch(s, min(s + batch_size, len(self)))

    @property
    def stems(self) -> list[str]:
        """Each image's file name without extension, as the seed names its ``.bin`` files."""
        return [seed_stem(it.path) for it in self.items]

    def seed_layout(self, workers: int | None = None, progress: bool = True) -> SeedLayout:
        """The seed's per-image ``.bin`` + info layout of this cache, written once per content fingerprint in
        a folder shared by every run and artifact using the cache (see :mod:`.seed_layout`)."""
        return write_seed_layout(self, shared_layout_dir(self), workers=workers, progress=progress)

    def write_seed_layout(
        self, out_dir: str | os.PathLike[str], workers: int | None = None, progress: bool = True
    ) -> SeedLayout:
        """The seed's layout under an explicit ``out_dir`` (``reid-validate preprocess --seed-layout DIR``)."""
        return write_seed_layout(self, out_dir, workers=workers, progress=progress)
