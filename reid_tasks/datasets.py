"""Market-1501: reid-strong-baseline's parsing (the synthetic generator is ``reid_tasks.synthetic``).

Parsing follows reid-strong-baseline ``data/datasets/market1501.py`` (@3da7e6f0): every ``*.jpg`` of
``query/`` and ``bounding_box_test/`` (and ``bounding_box_train/`` when present), names matched with
``([-\\d]+)_c(\\d)``, pid -1 (junk) skipped, pid 0 (distractors) kept, camid 1..6 made 0-based.
Two deliberate differences, both for determinism and robustness:

* files are listed **sorted by file name** (RSB uses ``glob`` order, i.e. whatever order the file
  system returns; the set of items is identical, only the order is made stable);
* the regex is applied to the file name, not the whole path, so digits in a parent folder name can
  never be mistaken for a pid; RSB's ``assert``s become :class:`DatasetError`.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from .errors import DatasetError

__all__ = [
    "DATASET_DIR_NAMES",
    "ImageItem",
    "Market1501",
    "parse_market_name",
]

#: Folder names accepted below a root (RSB's later ``dataset_dir`` and its original one).
DATASET_DIR_NAMES = ("Market-1501-v15.09.15", "market1501")
_PATTERN = re.compile(r"([-\d]+)_c(\d)")
_MAX_PID = 1501
_NUM_CAMS = 6


class ImageItem(NamedTuple):
    """One image: absolute path, person id (0 = distractor), 0-based camera id."""

    path: str
    pid: int
    camid: int


def parse_market_name(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """(pid, 0-based camid) of a Market-1501 file name; ``None`` for junk (pid -1).

    Raises :class:`DatasetError` naming the path when the name does not parse or is out of range.
    """
    name = os.path.basename(os.fspath(path))
    m = _PATTERN.search(name)
    if m is None:
        raise DatasetError(f"{path}: file name does not match Market-1501 pattern {_PATTERN.pattern!r}")
    try:
        pid, camid = int(m.group(1)), int(m.group(2))
    except ValueError as exc:
        raise DatasetError(f"{path}: cannot parse person id {m.group(1)!r}") from exc
    if pid == -1:
        return None
    if not 0 <= pid <= _MAX_PID:
        raise DatasetError(f"{path}: person id {pid} outside 0..{_MAX_PID}")
    if not 1 <= camid <= _NUM_CAMS:
        raise DatasetError(f"{path}: camera id {camid} outside 1..{_NUM_CAMS}")
    return pid, camid - 1


def scan_folder(dir_path: Path) -> list[ImageItem]:
    """The images of one Market-1501 folder, sorted by file name, with pid and camid parsed from each name."""
    if not dir_path.is_dir():
        raise DatasetError(f"Market-1501 folder missing: {dir_path}")
    names = sorted(e.name for e in os.scandir(dir_path) if e.name.endswith(".jpg") and e.is_file())
    if not names:
        raise DatasetError(f"Market-1501 folder has no *.jpg files: {dir_path}")
    items = []
    for name in names:
        parsed = parse_market_name(dir_path / name)
        if parsed is None:
            continue  # junk images are ignored, as in RSB
        items.append(ImageItem(str(dir_path / name), parsed[0], parsed[1]))
    return items


def _find_dataset_dir(root: Path) -> Path:
    if (root / "query").is_dir() or (root / "bounding_box_test").is_dir():
        return root
    for name in DATASET_DIR_NAMES:
        if (root / name).is_dir():
            return root / name
    if not root.exists():
        raise DatasetError(f"Market-1501 root does not exist: {root}")
    raise DatasetError(
        f"no Market-1501 dataset at {root}: expected query/ and bounding_box_test/ there or in one of "
        f"{', '.join(DATASET_DIR_NAMES)}/"
    )


def _stats(items: Sequence[ImageItem]) -> tuple[int, int, int]:
    return len({i.pid for i in items}), len(items), len({i.camid for i in items})


class Market1501:
    """Market-1501 test split (and train split when present), parsed as reid-strong-baseline does.

    ``root`` is the folder holding ``Market-1501-v15.09.15/`` (or ``market1501/``), or the dataset
    folder itself. ``query``/``gallery``/``train`` are lists of :class:`ImageItem` sorted by file name;
    ``items`` is query followed by gallery (the order features are evaluated in).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = _find_dataset_dir(Path(root).expanduser().absolute())
        self.query_dir = self.root / "query"
        self.gallery_dir = self.root / "bounding_box_test"
        self.train_dir = self.root / "bounding_box_train"
        self.query: list[ImageItem] = scan_folder(self.query_dir)
        self.gallery: list[ImageItem] = scan_folder(self.gallery_dir)
        self.train: list[ImageItem] = scan_folder(self.train_dir) if self.train_dir.is_dir() else []

    @property
    def num_query(self) -> int:
        return len(self.query)

    @property
    def num_gallery(self) -> int:
        return len(self.gallery)

    @property
    def items(self) -> list[ImageItem]:
        """Query then gallery."""
        return self.query + self.gallery

    def splits(self) -> list[str]:
        """Split name ('query' | 'gallery') of each entry of :attr:`items`."""
        return ["query"] * len(self.query) + ["gallery"] * len(self.gallery)

    def __len__(self) -> int:
        return len(self.query) + len(self.gallery)

    def __repr__(self) -> str:
        return f"Market1501({str(self.root)!r}, query={self.num_query}, gallery={self.num_gallery})"

    def fingerprint(self) -> dict[str, object]:
        """Counts plus sha256 over the sorted relative file list with pid/camid (names, not bytes).

        ``result["short"]`` is a 12-hex-digit form for logs and keys.
        """
        h = hashlib.sha256()
        for split, items in (("query", self.query), ("bounding_box_test", self.gallery)):
            for it in items:
                h.update(f"{split}/{os.path.basename(it.path)} {it.pid} {it.camid}\n".encode())
        digest = h.hexdigest()
        q_ids, q_imgs, q_cams = _stats(self.query)
        g_ids, g_imgs, g_cams = _stats(self.gallery)
        return {
            "dataset": "market1501",
            "num_query": q_imgs,
            "num_query_ids": q_ids,
            "num_query_cams": q_cams,
            "num_gallery": g_imgs,
            "num_gallery_ids": g_ids,
            "num_gallery_cams": g_cams,
            "sha256": digest,
            "short": digest[:12],
        }

    def statistics(self) -> str:
        """The table reid-strong-baseline's ``print_dataset_statistics`` prints."""
        rows = [("train", self.train)] if self.train else []
        rows += [("query", self.query), ("gallery", self.gallery)]
        lines = [
            "Dataset statistics:",
            "  ----------------------------------------",
            "  subset   | # ids | # images | # cameras",
            "  ----------------------------------------",
        ]
        for name, items in rows:
            ids, imgs, cams = _stats(items)
            lines.append(f"  {name:<8} | {ids:5d} | {imgs:8d} | {cams:9d}")
        lines.append("  ----------------------------------------")
        return "\n".join(lines)


def __getattr__(name: str) -> object:
    # the synthetic generator moved to reid_tasks.synthetic; imports written against this module keep working
    if name in ("SyntheticInfo", "make_synthetic_market1501"):
        from . import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
