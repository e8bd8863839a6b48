"""The seed's per-image input layout, written once per cache content and shared.

Layout (what ``ReID_preprocess.py`` + ``gen_dataset_info.py bin prep_dataset prep_bin.info 128 256`` make)::

    prep_dataset/<stem>.bin    raw float32 CHW (3 x 256 x 128 = 393,216 bytes), stem = name up to the first '.'
    prep_bin.info              "<index> <path> <width> <height>" per line, index from 0

``benchmark.x86_64`` reads the info file and names each output ``<stem>_1.bin`` (ais_bench: ``<stem>_0.bin``);
the seed's ``ReID_postprocess.py`` globs the query and gallery folders, skips pid -1 and reads
``<stem>_1.bin`` for each remaining image. Two deliberate differences from the seed, neither visible to that
pairing (tests/core/test_seed_layout.py runs it on this layout):

* junk images (pid -1) are not converted: the postprocess skips them before reading any output, so they
  would cost 393 KB and one inference each (3,819 of Market-1501's gallery files) and change nothing;
* the info file lists absolute paths in cache order (query then gallery, the order features are read back)
  instead of relative paths in ``glob`` order: one layout serves runs with different working directories,
  and a relative path would resolve against each benchmark's own directory.

The float32 layout is 4x the uint8 cache, so it is written once per cache fingerprint under
``<cache parent>/_seed_layouts/<fingerprint>`` (:func:`shared_layout_dir`) and reused by every artifact and
run; an ``flock`` serialises writers (a second writer waits, then reuses the finished layout), the files are
built in a temporary folder renamed into place, and the free space is checked first.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from ..errors import PreprocessError
from ..storage import disk_full_as_error, file_lock, require_free_space
from ..utils import Progress, atomic_write_json, replace_dir
from .settings import CHUNK
from .workers import default_workers

if TYPE_CHECKING:
    from .cache import TensorCache

SEED_BIN_DIR = "prep_dataset"
SEED_INFO_NAME = "prep_bin.info"
SEED_MARKER = ".complete.json"
LAYOUTS_DIR = "_seed_layouts"


class SeedLayout(NamedTuple):
    """The seed's preprocessed layout: ``<stem>.bin`` files, the info file, stems in cache order."""

    bin_dir: Path
    info_path: Path
    stems: list[str]


def seed_stem(path: str) -> str:
    """The seed's ``.bin`` name for an image file: its name up to the first '.'."""
    return os.path.basename(path).split(".")[0]


def shared_layout_dir(cache: TensorCache) -> Path:
    """Where the shared layout of ``cache`` lives: beside the cache, keyed by its content fingerprint."""
    return cache.dir.parent / LAYOUTS_DIR / cache.fingerprint[:32]


def layout_bytes(cache: TensorCache) -> int:
    """Bytes the ``.bin`` files of ``cache`` take (float32 CHW per image)."""
    return len(cache) * 3 * cache.height * cache.width * 4


def _stems(cache: TensorCache) -> list[str]:
    stems = [seed_stem(it.path) for it in cache.items]
    seen: dict[str, str] = {}
    for it, stem in zip(cache.items, stems, strict=True):
        if stem in seen:
            raise PreprocessError(f"seed layout needs unique file names; {stem!r} is both {seen[stem]} and {it.path}")
        seen[stem] = it.path
    return stems


def _complete(out_dir: Path, marker: dict) -> bool:
    with contextlib.suppress(OSError, ValueError):
        return json.loads((out_dir / SEED_MARKER).read_text()) == marker
    return False


def write_seed_layout(
    cache: TensorCache, out_dir: str | os.PathLike[str], workers: int | None = None, progress: bool = True
) -> SeedLayout:
    """Write (or reuse) the seed's layout of ``cache`` under ``out_dir``.

    Reused when its completion marker names this cache's fingerprint; otherwise built under an exclusive
    lock in a temporary folder and renamed into place. DiskSpaceError (needed vs free, path) before writing
    when the volume is too small, or naming the path when it fills up while writing; nothing partial stays.
    """
    out_dir = Path(out_dir).expanduser().absolute()
    stems = _stems(cache)
    bin_dir, info_path = out_dir / SEED_BIN_DIR, out_dir / SEED_INFO_NAME
    layout = SeedLayout(bin_dir, info_path, stems)
    marker = {"fingerprint": cache.fingerprint, "count": len(cache), "size": [cache.height, cache.width]}
    marker["bin_dir"] = str(bin_dir)
    if _complete(out_dir, marker):
        return layout
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(out_dir.parent / f".{out_dir.name}.lock"):
        if _complete(out_dir, marker):  # another process wrote it while this one waited
            return layout
        n = len(cache)
        require_free_space(out_dir.parent, layout_bytes(cache), f"the seed's .bin layout of {n} images")
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
        try:
            with disk_full_as_error(out_dir, "the seed's .bin layout"):
                _write(cache, tmp, stems, workers or default_workers(), progress)
                lines = [
                    f"{i} {bin_dir / (stem + '.bin')} {cache.width} {cache.height}\n" for i, stem in enumerate(stems)
                ]
                (tmp / SEED_INFO_NAME).write_text("".join(lines))
                atomic_write_json(tmp / SEED_MARKER, marker)
            replace_dir(tmp, out_dir)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return layout


def _write(cache: TensorCache, tmp: Path, stems: list[str], workers: int, progress: bool) -> None:
    (tmp / SEED_BIN_DIR).mkdir()
    n = len(cache)
    bar = Progress(n, "seed layout") if progress else None

    def write(s: int, e: int) -> int:
        x = cache.batch(s, e)
        for j in range(e - s):
            x[j].tofile(tmp / SEED_BIN_DIR / f"{stems[s + j]}.bin")
        return e - s

    chunks = [(s, min(s + CHUNK, n)) for s in range(0, n, CHUNK)]
    try:
        with cf.ThreadPoolExecutor(workers) as ex:
            for done in ex.map(lambda c: write(*c), chunks):
                if bar is not None:
                    bar.update(done)
    finally:
        if bar is not None:
            bar.close()
