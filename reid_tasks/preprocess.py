"""Preprocessing: the seed's test transform with OpenCV + numpy, a compact tensor cache, the seed's layout.

Reference transform (reid-strong-baseline / the seed's ``ReID_preprocess.py``)::

    PIL.Image.open(p).convert("RGB") -> Resize((H, W)) bilinear -> ToTensor (/255, CHW)
    -> Normalize(PIXEL_MEAN, PIXEL_STD) -> float32

:func:`preprocess_image` reproduces it within one grey level (<= 0.02 after normalisation):

* decoding with ``cv2.imdecode`` (EXIF orientation ignored, as PIL's ``open`` does; grey, palette and
  alpha images become RGB exactly as ``convert("RGB")`` does: grey replicated, alpha dropped). CMYK
  JPEGs, 16-bit PNGs and anything cv2 cannot decode go through PIL itself;
* upscaling (every Market-1501 crop: 128x64 -> 256x128) with ``cv2.resize(INTER_LINEAR)``, which is
  PIL's bilinear filter when no axis shrinks; when an axis shrinks, PIL's antialiased bilinear filter
  (support scaled by the reduction factor) is applied with its own separable weights in numpy;
* normalisation as ``x * (1 / (255 * std)) + (-mean / std)`` in float32, the same code for single
  images, cache batches and the seed's ``.bin`` files, so all three are bit-identical to each other.

:func:`preprocess_dataset` decodes and resizes in parallel into ONE uint8 NHWC array at model size
(``images.u8.npy``, 96 KiB per 256x128 image instead of 384 KiB of float32) plus ``manifest.json``;
:class:`TensorCache` serves normalised float32 NCHW batches from it and writes the seed's per-image
``.bin`` layout and ``gen_dataset_info.py`` info file when a target needs them.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .errors import DatasetError, PreprocessError
from .utils import Progress, atomic_write_json, replace_dir

log = logging.getLogger("reid_tasks.preprocess")

__all__ = [
    "CACHE_VERSION",
    "CacheItem",
    "SeedLayout",
    "TensorCache",
    "add_preprocess_parser",
    "cli_preprocess",
    "normalise",
    "preprocess_dataset",
    "preprocess_image",
    "reference_preprocess",
]

CACHE_VERSION = 1
ARRAY_NAME = "images.u8.npy"
MANIFEST_NAME = "manifest.json"
SEED_BIN_DIR = "prep_dataset"
SEED_INFO_NAME = "prep_bin.info"
SEED_MARKER = ".complete.json"
INTERPOLATION = "bilinear (PIL-equivalent: cv2 INTER_LINEAR when upscaling, PIL antialias weights otherwise)"
_CHUNK = 32  # images per parallel task


class CacheItem(NamedTuple):
    """One cached image: source path, person id, 0-based camera id, 'query' | 'gallery'."""

    path: str
    pid: int
    camid: int
    split: str


class SeedLayout(NamedTuple):
    """The seed's preprocessed layout: ``<stem>.bin`` files, the info file, stems in cache order."""

    bin_dir: Path
    info_path: Path
    stems: list[str]


@dataclass(frozen=True)
class _Settings:
    height: int
    width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_cfg(cls, cfg: Any) -> _Settings:
        h, w = (int(v) for v in cfg.INPUT.SIZE_TEST)
        mean = tuple(float(v) for v in cfg.INPUT.PIXEL_MEAN)
        std = tuple(float(v) for v in cfg.INPUT.PIXEL_STD)
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0 or h <= 0 or w <= 0:
            raise PreprocessError(f"bad preprocessing settings: size {[h, w]}, mean {mean}, std {std}")
        return cls(h, w, mean, std)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": [self.height, self.width],
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": INTERPOLATION,
            "color": "RGB",
            "layout": "NHWC",
            "dtype": "uint8",
        }

    def scale_offset(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel float32 (a, b) with (x / 255 - mean) / std == x * a + b."""
        a = np.array([1.0 / (255.0 * s) for s in self.std], dtype=np.float32)
        b = np.array([-m / s for m, s in zip(self.mean, self.std, strict=True)], dtype=np.float32)
        return a, b


# --------------------------------------------------------------------------- decoding and resizing


class _BadImage(Exception):
    """An image that cannot be read or decoded (reason in args[0])."""


def _cv2():
    import cv2

    return cv2


def _jpeg_components(data: bytes) -> int | None:
    """Number of colour components from a JPEG's SOF header (None if not found)."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        seg_len = (data[i + 2] << 8) | data[i + 3]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return data[i + 9] if i + 9 < n else None
        if marker == 0xDA:
            return None
        i += 2 + seg_len
    return None


def _pil_decode(data: bytes) -> np.ndarray:
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as exc:  # PIL raises many types for bad files
        raise _BadImage(f"{type(exc).__name__}: {exc}") from exc


def _decode_rgb(data: bytes) -> np.ndarray:
    """HxWx3 uint8 RGB, as ``PIL.Image.open(...).convert('RGB')`` gives."""
    if not data:
        raise _BadImage("empty file")
    cv2 = _cv2()
    if data[:2] == b"\xff\xd8":
        # PIL refuses truncated JPEGs ("image file is truncated"); libjpeg under cv2 pads them grey.
        if data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
            raise _BadImage("truncated JPEG (no end-of-image marker after the last scan)")
        if _jpeg_components(data) == 4:  # CMYK/YCCK: PIL's conversion differs from libjpeg's
            return _pil_decode(data)
    elif data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 24 and data[24] == 16:
        return _pil_decode(data)  # 16-bit PNG: PIL's 16->8 bit conversion differs from cv2's
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error:
        img = None
    if img is None or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        return _pil_decode(data)  # formats cv2 lacks (GIF...), and PIL's reason for broken files
    return img


def _pil_weights(in_size: int, out_size: int) -> np.ndarray:
    """PIL's bilinear resampling weights (``precompute_coeffs``), as an (out, in) float64 matrix."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = filterscale
    weights = np.zeros((out_size, in_size), dtype=np.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        x = np.arange(xmin, xmax, dtype=np.float64)
        w = np.clip(1.0 - np.abs((x - center + 0.5) / filterscale), 0.0, None)
        total = w.sum()
        if total > 0:
            weights[xx, xmin:xmax] = w / total
    return weights


_WEIGHT_CACHE: dict[tuple[int, int], np.ndarray] = {}


def _weights(in_size: int, out_size: int) -> np.ndarray:
    key = (in_size, out_size)
    w = _WEIGHT_CACHE.get(key)
    if w is None:
        w = _WEIGHT_CACHE[key] = _pil_weights(in_size, out_size)
    return w


def _round_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(x + 0.5), 0, 255).astype(np.uint8)


def _resize_into(img: np.ndarray, height: int, width: int, out: np.ndarray | None = None) -> np.ndarray:
    """Resize HxWx3 uint8 to (height, width) like PIL's BILINEAR; write into ``out`` when given."""
    h, w = img.shape[:2]
    if h <= height and w <= width:
        # No axis shrinks: PIL's filter support is 1 pixel, i.e. plain bilinear with half-pixel
        # centres and clamped borders, which is what cv2's INTER_LINEAR computes.
        cv2 = _cv2()
        if out is not None:
            cv2.resize(img, (width, height), dst=out, interpolation=cv2.INTER_LINEAR)
            return out
        return cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
    # PIL resamples horizontally then vertically, rounding to uint8 in between.
    res = img
    if w != width:
        res = _round_u8(np.einsum("ox,hxc->hoc", _weights(w, width), res, optimize=True))
    if h != height:
        res = _round_u8(np.einsum("oy,ywc->owc", _weights(h, height), res, optimize=True))
    if out is not None:
        out[...] = res
        return out
    return res


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise _BadImage(f"cannot read: {exc.strerror or exc}") from exc


def load_resized(path: str | os.PathLike[str], height: int, width: int) -> np.ndarray:
    """Decoded, RGB, resized uint8 HxWx3 image (the cache's stored form). PreprocessError if unreadable."""
    try:
        return _resize_into(_decode_rgb(_read(os.fspath(path))), height, width)
    except _BadImage as exc:
        raise PreprocessError(f"{path}: {exc.args[0]}") from None


def normalise(u8: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 NHWC (or HWC) RGB -> float32 NCHW (or CHW): (x / 255 - mean) / std."""
    a = np.array([1.0 / (255.0 * s) for s in std], dtype=np.float32)
    b = np.array([-m / s for m, s in zip(mean, std, strict=True)], dtype=np.float32)
    return _normalise(u8, a, b)


def _normalise(u8: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    single = u8.ndim == 3
    x = u8[None] if single else u8
    n, h, w, _ = x.shape
    out = np.empty((n, 3, h, w), dtype=np.float32)
    for c in range(3):
        plane = np.ascontiguousarray(x[..., c])
        np.multiply(plane, a[c], out=out[:, c], casting="unsafe")
        out[:, c] += b[c]
    return out[0] if single else out


def preprocess_image(path: str | os.PathLike[str], cfg: Any) -> np.ndarray:
    """The seed's test transform of one image: float32 (3, H, W), H, W = cfg.INPUT.SIZE_TEST."""
    s = _Settings.from_cfg(cfg)
    a, b = s.scale_offset()
    return _normalise(load_resized(path, s.height, s.width), a, b)


def reference_preprocess(path: str | os.PathLike[str], cfg: Any) -> np.ndarray:
    """The reference itself (PIL + numpy, as torchvision's Resize/ToTensor/Normalize); for tests and checks."""
    from PIL import Image

    s = _Settings.from_cfg(cfg)
    with Image.open(path) as im:
        img = im.convert("RGB").resize((s.width, s.height), Image.BILINEAR)
    x = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)
    mean = np.array(s.mean, dtype=np.float32)[:, None, None]
    std = np.array(s.std, dtype=np.float32)[:, None, None]
    return ((x - mean) / std).astype(np.float32)


# --------------------------------------------------------------------------- the cache


def _as_items(items: Any) -> tuple[list[CacheItem], dict[str, Any] | None]:
    from .datasets import Market1501

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


def _default_workers() -> int:
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


_TLS = threading.local()


def _chunk_buffer(n: int, height: int, width: int) -> np.ndarray:
    """A per-thread reusable (n, H, W, 3) uint8 buffer (reused so its pages stay mapped and hot)."""
    buf = getattr(_TLS, "buf", None)
    if buf is None or buf.shape[0] < n or buf.shape[1:] != (height, width, 3):
        buf = _TLS.buf = np.empty((max(n, _CHUNK), height, width, 3), dtype=np.uint8)
    return buf[:n]


def _work_chunk(
    paths: Sequence[str], start: int, fd: int, offset: int, height: int, width: int
) -> tuple[list[str | None], list[tuple[int, str]]]:
    """Decode+resize ``paths`` and write them as rows ``start...`` of the array file open at ``fd``.

    Rows go through a hot per-thread buffer and one ``os.pwrite`` per chunk (page-faulting fresh memmap
    pages per image costs more than decoding). Returns per-item sha256 (None when bad) and bad reasons.
    """
    hashes: list[str | None] = []
    bad: list[tuple[int, str]] = []
    buf = _chunk_buffer(len(paths), height, width)
    for i, path in enumerate(paths):
        try:
            data = _read(path)
            _resize_into(_decode_rgb(data), height, width, out=buf[i])
            hashes.append(hashlib.sha256(data).hexdigest())
        except _BadImage as exc:
            hashes.append(None)
            bad.append((start + i, str(exc.args[0])))
            buf[i] = 0
        except Exception as exc:  # anything else from the decoders is a bad image too, never a crash
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


def _proc_chunk(paths: Sequence[str], start: int) -> tuple[list[str | None], list[tuple[int, str]]]:
    return _work_chunk(paths, start, _PROC["fd"], *_PROC["args"])


def _fill(
    paths: Sequence[str],
    array_path: Path,
    offset: int,
    height: int,
    width: int,
    workers: int,
    backend: str,
    progress: bool,
) -> tuple[list[str | None], list[tuple[int, str]]]:
    n = len(paths)
    chunks = [(s, min(s + _CHUNK, n)) for s in range(0, n, _CHUNK)]
    hashes: list[str | None] = [None] * n
    bad: list[tuple[int, str]] = []
    bar = Progress(n, "preprocess") if progress else None
    cv2 = _cv2()
    prev_threads = cv2.getNumThreads()

    def collect(s: int, res: tuple[list[str | None], list[tuple[int, str]]]) -> None:
        hashes[s : s + len(res[0])] = res[0]
        bad.extend(res[1])
        if bar is not None:
            bar.update(len(res[0]))

    fd = os.open(array_path, os.O_WRONLY)
    try:
        cv2.setNumThreads(1)
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


def _read_manifest(cache_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((cache_dir / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None


def preprocess_dataset(
    items: Any,
    out_dir: str | os.PathLike[str],
    cfg: Any,
    workers: int | None = None,
    skip_bad: bool = False,
    progress: bool = True,
    backend: str = "thread",
) -> TensorCache:
    """Preprocess ``items`` into a tensor cache at ``out_dir`` (reused when inputs and settings are unchanged).

    ``items``: a :class:`~reid_tasks.datasets.Market1501` (query then gallery) or a sequence of
    ``ImageItem``/``(path, pid, camid[, split])`` (split defaults to 'gallery' for files in a
    ``bounding_box_test`` folder, else 'query'). ``workers``: threads (or processes with
    ``backend="process"``); ``None``/0 = one per core. Unreadable or corrupt images raise
    :class:`PreprocessError` listing every one with its reason; with ``skip_bad`` they are left out and
    recorded in the manifest and on ``cache.bad``. The cache is built in a temporary folder beside
    ``out_dir`` and renamed into place.
    """
    t0 = time.perf_counter()
    settings = _Settings.from_cfg(cfg)
    cache_items, dataset_fp = _as_items(items)
    if not cache_items:
        raise PreprocessError("nothing to preprocess: no images given")
    num_query = _num_query(cache_items)
    if backend not in ("thread", "process"):
        raise PreprocessError(f"backend must be 'thread' or 'process', got {backend!r}")
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
    workers = workers or _default_workers()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        array_path = tmp / ARRAY_NAME
        arr = np.lib.format.open_memmap(array_path, mode="w+", dtype=np.uint8, shape=(n, h, w, 3))
        offset = int(arr.offset)
        del arr  # rows are written with pwrite by the workers
        hashes, bad_idx = _fill([it.path for it in cache_items], array_path, offset, h, w, workers, backend, progress)
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
        s = manifest["settings"]
        self.height, self.width = int(s["size"][0]), int(s["size"][1])
        self.mean = tuple(float(v) for v in s["mean"])
        self.std = tuple(float(v) for v in s["std"])
        self._a = np.array([1.0 / (255.0 * v) for v in self.std], dtype=np.float32)
        self._b = np.array([-m / v for m, v in zip(self.mean, self.std, strict=True)], dtype=np.float32)
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
        return _normalise(self._array[start:stop], self._a, self._b)

    def iter_batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """float32 NCHW batches in order; the last one may be short."""
        if batch_size < 1:
            raise PreprocessError(f"batch size must be >= 1, got {batch_size}")
        for s in range(0, len(self), batch_size):
            yield self.batch(s, min(s + batch_size, len(self)))

    @property
    def stems(self) -> list[str]:
        return [Path(it.path).stem for it in self.items]

    def write_seed_layout(
        self, out_dir: str | os.PathLike[str], workers: int | None = None, progress: bool = True
    ) -> SeedLayout:
        """Write the seed's layout under ``out_dir``: ``prep_dataset/<stem>.bin`` (raw float32 CHW, one per
        image) and ``prep_bin.info`` exactly as ``gen_dataset_info.py bin prep_dataset prep_bin.info W H``
        ("<index> <absolute .bin path> <width> <height>", index from 0, cache order: query then gallery).

        Built in a temporary folder and renamed into place; an existing layout is reused only when its
        completion marker names this cache's fingerprint.
        """
        out_dir = Path(out_dir).expanduser().absolute()
        stems = self.stems
        seen: dict[str, str] = {}
        for it, stem in zip(self.items, stems, strict=True):
            if stem in seen:
                raise PreprocessError(
                    f"seed layout needs unique file names; {stem!r} is both {seen[stem]} and {it.path}"
                )
            seen[stem] = it.path
        bin_dir, info_path = out_dir / SEED_BIN_DIR, out_dir / SEED_INFO_NAME
        layout = SeedLayout(bin_dir, info_path, stems)
        marker = {
            "fingerprint": self.fingerprint,
            "count": len(self),
            "size": [self.height, self.width],
            "bin_dir": str(bin_dir),
        }
        with contextlib.suppress(OSError, ValueError):
            if json.loads((out_dir / SEED_MARKER).read_text()) == marker:
                return layout
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
        try:
            (tmp / SEED_BIN_DIR).mkdir()
            n = len(self)
            bar = Progress(n, "seed layout") if progress else None

            def write(s: int, e: int) -> int:
                x = self.batch(s, e)
                for j in range(e - s):
                    x[j].tofile(tmp / SEED_BIN_DIR / f"{stems[s + j]}.bin")
                return e - s

            chunks = [(s, min(s + _CHUNK, n)) for s in range(0, n, _CHUNK)]
            with cf.ThreadPoolExecutor(workers or _default_workers()) as ex:
                for done in ex.map(lambda c: write(*c), chunks):
                    if bar is not None:
                        bar.update(done)
            if bar is not None:
                bar.close()
            lines = [f"{i} {bin_dir / (stem + '.bin')} {self.width} {self.height}\n" for i, stem in enumerate(stems)]
            (tmp / SEED_INFO_NAME).write_text("".join(lines))
            atomic_write_json(tmp / SEED_MARKER, marker)
            replace_dir(tmp, out_dir)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return layout


# --------------------------------------------------------------------------- CLI


def _folder_items(folder: Path) -> list[CacheItem]:
    from .datasets import parse_market_name

    split = "gallery" if folder.name == "bounding_box_test" else "query"
    names = sorted(e.name for e in os.scandir(folder) if e.name.endswith(".jpg") and e.is_file())
    if not names:
        raise DatasetError(f"no *.jpg files in {folder}")
    items = []
    for name in names:
        parsed = parse_market_name(folder / name)
        if parsed is not None:
            items.append(CacheItem(str(folder / name), parsed[0], parsed[1], split))
    return items


def resolve_source(src: str | os.PathLike[str]) -> Any:
    """A Market-1501 root (-> Market1501) or a single folder of Market-named *.jpg (-> list of CacheItem)."""
    from .datasets import Market1501

    path = Path(src).expanduser().absolute()
    if not path.is_dir():
        raise DatasetError(f"source folder does not exist: {path}")
    try:
        return Market1501(path)
    except DatasetError:
        if (path / "query").exists() or (path / "bounding_box_test").exists():
            raise
        if not any(e.name.endswith(".jpg") for e in os.scandir(path)):
            raise
    return _folder_items(path)


def add_preprocess_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``preprocess SRC DST [--config-file X] [KEY VALUE ...] [--workers N] [--skip-bad] [--seed-layout DIR]``."""
    p = subparsers.add_parser(
        "preprocess",
        help="preprocess Market-1501 (or one image folder) into a tensor cache",
        description=(
            "Decode, resize (bilinear, PIL-equivalent) and store images at model size as one uint8 array + "
            "manifest; optionally also write the seed's float32 <stem>.bin files and info file."
        ),
    )
    p.add_argument("src", help="Market-1501 root, or a folder of Market-named *.jpg")
    p.add_argument("dst", help="cache folder to create (reused when inputs and settings are unchanged)")
    p.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides, as the seed's command line")
    p.add_argument("--config-file", "--config_file", dest="config_file", default=None, help="yacs yml")
    p.add_argument("--workers", type=int, default=None, help="parallel workers (default: VALIDATION.WORKERS or cores)")
    p.add_argument("--skip-bad", action="store_true", help="leave unreadable images out and record them")
    p.add_argument("--seed-layout", default=None, metavar="DIR", help="also write <stem>.bin files + prep_bin.info")
    p.set_defaults(func=cli_preprocess)
    return p


def cli_preprocess(args: argparse.Namespace) -> int:
    """Handler of ``reid-validate preprocess``."""
    from .config import load_config

    cfg = load_config(args.config_file, list(args.opts or ()))
    source = resolve_source(args.src)
    workers = args.workers or int(cfg.VALIDATION.WORKERS) or None
    t0 = time.perf_counter()
    cache = preprocess_dataset(source, args.dst, cfg, workers=workers, skip_bad=args.skip_bad)
    dt = time.perf_counter() - t0
    state = "reused" if cache.reused else f"built in {dt:.2f} s ({len(cache) / max(dt, 1e-9):.0f} img/s)"
    print(
        f"cache {cache.dir}: {len(cache)} images ({cache.num_query} query, {len(cache) - cache.num_query} gallery), "
        f"{cache.height}x{cache.width}, {state}, fingerprint {cache.fingerprint[:12]}"
    )
    if cache.bad:
        print(f"skipped {len(cache.bad)} unreadable image(s) (recorded in {cache.dir / MANIFEST_NAME}):")
        for b in cache.bad:
            print(f"  {b['path']}: {b['reason']}")
    if args.seed_layout:
        layout = cache.write_seed_layout(args.seed_layout, workers=workers)
        print(f"seed layout: {len(layout.stems)} files in {layout.bin_dir}, info file {layout.info_path}")
    return 0
