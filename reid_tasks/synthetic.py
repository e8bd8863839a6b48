"""A deterministic synthetic Market-1501 (same layout and file names) for the demo and the tests.

People are drawn as figures with per-identity clothing colours over per-camera backgrounds and colour response;
the set is written atomically and reused when the same parameters ask for it again.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .datasets import _MAX_PID, _NUM_CAMS, DATASET_DIR_NAMES
from .errors import DatasetError
from .utils import replace_dir

__all__ = ["SyntheticInfo", "make_synthetic_market1501"]


@dataclass(frozen=True)
class SyntheticInfo:
    """What :func:`make_synthetic_market1501` wrote."""

    root: str  # the dataset folder (…/Market-1501-v15.09.15)
    seed: int
    num_ids: int
    num_query: int
    num_gallery: int  # files in bounding_box_test, junk included
    num_distractors: int
    num_junk: int
    num_train: int
    pids: list[int] = field(default_factory=list)
    reused: bool = False

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


_H, _W = 128, 64
_GEN_VERSION = 1


def _hsv_colour(rng: np.random.Generator, s_range=(0.35, 1.0), v_range=(0.25, 0.95)) -> np.ndarray:
    h = rng.uniform(0.0, 1.0)
    s = rng.uniform(*s_range)
    v = rng.uniform(*v_range)
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array(rgb, dtype=np.float32) * 255.0


def _identity(rng: np.random.Generator) -> dict[str, object]:
    return {
        "shirt": _hsv_colour(rng),
        "trousers": _hsv_colour(rng, (0.1, 0.8), (0.1, 0.7)),
        "skin": np.array([rng.uniform(150, 235), rng.uniform(110, 190), rng.uniform(80, 160)], np.float32),
        "hair": _hsv_colour(rng, (0.0, 0.6), (0.05, 0.5)),
        "stripes": bool(rng.random() < 0.4),
        "stripe_colour": _hsv_colour(rng),
        "stripe_period": int(rng.integers(6, 14)),
        "bag": bool(rng.random() < 0.4),
        "bag_colour": _hsv_colour(rng, (0.2, 0.9), (0.1, 0.8)),
        "bag_side": int(rng.integers(0, 2)),
        "width": float(rng.uniform(0.85, 1.1)),
        "torso_len": float(rng.uniform(0.28, 0.36)),
    }


def _camera(rng: np.random.Generator) -> dict[str, object]:
    return {
        "gain": rng.uniform(0.85, 1.15, size=3).astype(np.float32),
        "offset": float(rng.uniform(-10, 10)),
        "bg": _hsv_colour(rng, (0.0, 0.2), (0.35, 0.65)),
        "bg_grad": rng.uniform(-20, 20, size=3).astype(np.float32),
    }


def _render(rng: np.random.Generator, ident: dict | None, cam: dict) -> np.ndarray:
    """One 128x64 RGB uint8 crop of ``ident`` (``None``: background/partial clutter) seen by ``cam``."""
    ys = np.linspace(0.0, 1.0, _H, dtype=np.float32)[:, None, None]
    img = cam["bg"][None, None, :] + ys * cam["bg_grad"][None, None, :]
    img = np.broadcast_to(img, (_H, _W, 3)).copy()
    # a floor band and some wall texture per camera
    floor = int(_H * rng.uniform(0.75, 0.9))
    img[floor:] *= 0.8
    if ident is None:
        # distractor/junk: random blobs and maybe a fragment of a body
        for _ in range(int(rng.integers(2, 6))):
            c = _hsv_colour(rng)
            y0, x0 = int(rng.integers(0, _H - 8)), int(rng.integers(0, _W - 8))
            img[y0 : y0 + int(rng.integers(8, 50)), x0 : x0 + int(rng.integers(6, 30))] = c
    else:
        scale = rng.uniform(0.9, 1.08)
        cx = _W / 2 + rng.uniform(-4, 4)
        top = 6 + rng.uniform(-4, 4)
        body_h = (_H - 10) * scale
        half_w = 17 * ident["width"] * scale
        head_h = body_h * 0.14
        torso_h = body_h * ident["torso_len"]
        y_head, y_torso = top, top + head_h
        y_legs = y_torso + torso_h
        y_end = min(top + body_h, _H - 1)
        yy, xx = np.mgrid[0:_H, 0:_W].astype(np.float32)
        # head (skin + hair cap)
        hcy, hr = y_head + head_h / 2, head_h / 2
        head = ((xx - cx) / (hr * 0.8)) ** 2 + ((yy - hcy) / hr) ** 2 <= 1.0
        img[head] = ident["skin"]
        img[head & (yy < hcy - hr * 0.3)] = ident["hair"]
        # torso, with optional horizontal stripes
        torso = (np.abs(xx - cx) <= half_w) & (yy >= y_torso) & (yy < y_legs)
        img[torso] = ident["shirt"]
        if ident["stripes"]:
            band = ((yy - y_torso) % ident["stripe_period"]) < ident["stripe_period"] / 2
            img[torso & band] = ident["stripe_colour"]
        # arms in shirt colour, hands in skin
        arms = (np.abs(np.abs(xx - cx) - half_w - 3) <= 2.5) & (yy >= y_torso + 2) & (yy < y_legs + 6)
        img[arms] = ident["shirt"] * 0.85
        # legs: two columns with a gap
        leg_w = half_w * 0.45
        legs = (np.abs(np.abs(xx - cx) - half_w * 0.5) <= leg_w) & (yy >= y_legs) & (yy < y_end - 3)
        img[legs] = ident["trousers"]
        img[(np.abs(np.abs(xx - cx) - half_w * 0.5) <= leg_w) & (yy >= y_end - 3) & (yy < y_end)] = 30.0
        if ident["bag"]:
            side = 1 if ident["bag_side"] else -1
            bx = cx + side * (half_w + 4)
            bag = (np.abs(xx - bx) <= 6) & (yy >= y_legs - torso_h * 0.3) & (yy < y_legs + torso_h * 0.3)
            img[bag] = ident["bag_colour"]
    # camera response: per-channel gain (hue cast), brightness, sensor noise
    img = img * cam["gain"][None, None, :] + cam["offset"] + rng.normal(0.0, 5.0, size=img.shape)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - cv2 always encodes a valid uint8 image
        raise DatasetError("cv2.imencode failed for a synthetic image")
    return buf.tobytes()


def make_synthetic_market1501(
    root: str | os.PathLike[str],
    num_ids: int = 24,
    seed: int = 0,
    query_per_id: int = 1,
    gallery_per_id: int = 4,
    num_cams: int = 6,
    num_distractors: int = 8,
    num_junk: int = 4,
    with_train: bool = False,
    train_ids: int = 16,
    train_per_id: int = 4,
) -> SyntheticInfo:
    """Write a small Market-1501 look-alike under ``root/Market-1501-v15.09.15``.

    Real layout and naming (``0001_c1s1_001051_00.jpg``; distractors ``0000_…``, junk ``-1_…`` in
    ``bounding_box_test``), 128x64 RGB JPEGs (quality 90) of person-like figures whose clothing
    colours, stripes and bag depend on the identity, seen through per-camera colour casts, backgrounds,
    position/scale jitter and noise. Every query id has a gallery image from another camera.
    Deterministic: the same arguments give byte-identical files. The folder is built in a temporary
    directory and renamed into place; an existing folder made with the same arguments is reused.
    """
    if num_ids < 1 or query_per_id < 1 or gallery_per_id < 1:
        raise ValueError("num_ids, query_per_id and gallery_per_id must be >= 1")
    if not 2 <= num_cams <= _NUM_CAMS:
        raise ValueError(f"num_cams must be in 2..{_NUM_CAMS}, got {num_cams}")
    if query_per_id > 1 and gallery_per_id < 2:
        raise ValueError("query_per_id > 1 needs gallery_per_id >= 2 (a cross-camera match per query)")
    if num_ids + (train_ids if with_train else 0) > _MAX_PID:
        raise ValueError(f"at most {_MAX_PID} identities")
    params = {
        "version": _GEN_VERSION,
        "num_ids": num_ids,
        "seed": seed,
        "query_per_id": query_per_id,
        "gallery_per_id": gallery_per_id,
        "num_cams": num_cams,
        "num_distractors": num_distractors,
        "num_junk": num_junk,
        "with_train": with_train,
        "train_ids": train_ids if with_train else 0,
        "train_per_id": train_per_id if with_train else 0,
    }
    root = Path(root).expanduser().absolute()
    dest = root / DATASET_DIR_NAMES[0]
    marker = dest / ".synthetic.json"
    if marker.is_file():
        try:
            old = json.loads(marker.read_text())
        except (OSError, ValueError):
            old = None
        if old is not None and old.get("params") == params:
            return SyntheticInfo(**{**old["info"], "reused": True})

    rng = np.random.default_rng(seed)
    all_pids = rng.permutation(np.arange(1, _MAX_PID + 1))
    pids = sorted(int(p) for p in all_pids[:num_ids])
    train_pids = sorted(int(p) for p in all_pids[num_ids : num_ids + params["train_ids"]])
    cams = [_camera(rng) for _ in range(num_cams)]
    files: dict[str, list[tuple[str, np.ndarray]]] = {"query": [], "bounding_box_test": [], "bounding_box_train": []}
    frame = [int(v) for v in rng.integers(1000, 5000, size=num_cams)]

    def name(pid: int, cam: int, idx: int) -> str:
        frame[cam] += int(rng.integers(5, 60))
        seq = 1 + (frame[cam] // 30000) % 6
        prefix = "-1" if pid == -1 else f"{pid:04d}"
        return f"{prefix}_c{cam + 1}s{seq}_{frame[cam]:06d}_{idx:02d}.jpg"

    def add_identity(pid: int, n_query: int, n_gallery: int, gallery_folder: str) -> None:
        ident = _identity(rng)
        k = int(rng.integers(2, num_cams + 1))
        id_cams = [int(c) for c in rng.permutation(num_cams)[:k]]
        q = min(n_query, k)
        for j in range(q):
            c = id_cams[j]
            files["query"].append((name(pid, c, 1), _render(rng, ident, cams[c])))
        for j in range(n_gallery):
            c = id_cams[(1 + j) % k]
            files[gallery_folder].append((name(pid, c, 1 + j % 8), _render(rng, ident, cams[c])))

    for pid in pids:
        add_identity(pid, query_per_id, gallery_per_id, "bounding_box_test")
    for _ in range(num_distractors):
        c = int(rng.integers(0, num_cams))
        files["bounding_box_test"].append((name(0, c, 1), _render(rng, None, cams[c])))
    for _ in range(num_junk):
        c = int(rng.integers(0, num_cams))
        ident = _identity(rng) if rng.random() < 0.5 else None
        files["bounding_box_test"].append((name(-1, c, 1), _render(rng, ident, cams[c])))
    if with_train:
        for pid in train_pids:
            ident = _identity(rng)
            for j in range(train_per_id):
                c = int(rng.integers(0, num_cams))
                files["bounding_box_train"].append((name(pid, c, 1 + j % 8), _render(rng, ident, cams[c])))

    info = SyntheticInfo(
        root=str(dest),
        seed=seed,
        num_ids=num_ids,
        num_query=len(files["query"]),
        num_gallery=len(files["bounding_box_test"]),
        num_distractors=num_distractors,
        num_junk=num_junk,
        num_train=len(files["bounding_box_train"]),
        pids=pids,
    )
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=root))
    try:
        for folder, entries in files.items():
            if folder == "bounding_box_train" and not with_train:
                continue
            (tmp / folder).mkdir()
            for fname, rgb in entries:
                (tmp / folder / fname).write_bytes(_encode_jpeg(rgb))
        info_dict = info.to_dict()
        info_dict["root"] = str(dest)
        (tmp / ".synthetic.json").write_text(json.dumps({"params": params, "info": info_dict}, indent=2) + "\n")
        replace_dir(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return info
