"""Market-1501 parsing (reid-strong-baseline rules) and the synthetic generator."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from reid_tasks.datasets import ImageItem, Market1501, parse_market_name
from reid_tasks.errors import DatasetError
from reid_tasks.synthetic import make_synthetic_market1501

NUM_IDS = 10


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    info = make_synthetic_market1501(
        root, num_ids=NUM_IDS, seed=3, query_per_id=2, gallery_per_id=4, num_distractors=5, num_junk=3
    )
    return root, info


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"")


def _tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.jpg"))
    }


def test_parse_names_like_rsb():
    assert parse_market_name("/x/0001_c1s1_001051_00.jpg") == (1, 0)
    assert parse_market_name("0000_c6s3_094567_02.jpg") == (0, 5)  # distractor kept, camid 0-based
    assert parse_market_name("-1_c3s2_000001_00.jpg") is None  # junk skipped
    # digits in parent folders never leak into the pid (RSB searches the whole path)
    assert parse_market_name("/data/7_c9/0042_c2s1_000100_01.jpg") == (42, 1)


@pytest.mark.parametrize(
    "name", ["foo.jpg", "0001_x1s1_000000_00.jpg", "0001_c7s1_001051_00.jpg", "1502_c1s1_001051_00.jpg"]
)
def test_bad_names_raise_with_path(tmp_path, name):
    _touch(tmp_path / "query", "0001_c1s1_000001_00.jpg", name)
    _touch(tmp_path / "bounding_box_test", "0001_c2s1_000001_00.jpg")
    with pytest.raises(DatasetError, match=name.replace(".", r"\.")):
        Market1501(tmp_path)


def test_layout_junk_distractors_and_order(tmp_path):
    ds = tmp_path / "Market-1501-v15.09.15"
    _touch(ds / "query", "0002_c3s1_000010_00.jpg", "0001_c1s1_000001_00.jpg")
    _touch(
        ds / "bounding_box_test",
        "-1_c1s1_000002_00.jpg",
        "0000_c6s1_000003_00.jpg",
        "0001_c2s1_000004_00.jpg",
        "0002_c5s1_000005_00.jpg",
        "notes.txt",
    )
    m = Market1501(tmp_path)
    assert m.root == ds
    assert [(Path(i.path).name, i.pid, i.camid) for i in m.query] == [
        ("0001_c1s1_000001_00.jpg", 1, 0),
        ("0002_c3s1_000010_00.jpg", 2, 2),
    ]
    assert [(i.pid, i.camid) for i in m.gallery] == [(0, 5), (1, 1), (2, 4)]  # junk gone, sorted by name
    assert m.items == m.query + m.gallery and m.num_query == 2 and len(m) == 5
    assert all(isinstance(i, ImageItem) and Path(i.path).is_absolute() for i in m.items)
    assert m.splits() == ["query"] * 2 + ["gallery"] * 3
    # the dataset folder itself and RSB's old folder name are accepted too
    assert Market1501(ds).items == m.items
    (tmp_path / "other").mkdir()
    (ds).rename(tmp_path / "other" / "market1501")
    assert len(Market1501(tmp_path / "other")) == 5


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        Market1501(tmp_path / "nope")
    with pytest.raises(DatasetError, match="no Market-1501 dataset"):
        Market1501(tmp_path)
    _touch(tmp_path / "query", "0001_c1s1_000001_00.jpg")
    with pytest.raises(DatasetError, match="bounding_box_test"):
        Market1501(tmp_path)
    (tmp_path / "bounding_box_test").mkdir()
    with pytest.raises(DatasetError, match=r"no \*\.jpg.*bounding_box_test"):
        Market1501(tmp_path)


def test_synthetic_layout_counts_and_naming(synth):
    root, info = synth
    m = Market1501(root)
    assert info.root == str(m.root) and m.root.name == "Market-1501-v15.09.15"
    assert m.num_query == info.num_query == NUM_IDS * 2
    assert len(m.gallery) == info.num_gallery - info.num_junk == NUM_IDS * 4 + 5
    assert sum(1 for i in m.gallery if i.pid == 0) == 5
    assert len(list(m.gallery_dir.glob("-1_c*.jpg"))) == 3
    assert {i.pid for i in m.query} == set(info.pids) and len(info.pids) == NUM_IDS
    names = [Path(i.path).name for i in m.items]
    assert all(len(n.split("_")) == 4 and n.endswith(".jpg") for n in names)
    assert len(set(names)) == len(names)
    import cv2

    img = cv2.imread(m.query[0].path)
    assert img.shape == (128, 64, 3)
    assert not list(Path(root).glob(".*tmp"))  # no temp folders left behind


def test_every_query_has_cross_camera_match(synth):
    m = Market1501(synth[0])
    for q in m.query:
        assert any(g.pid == q.pid and g.camid != q.camid for g in m.gallery), q


def test_synthetic_deterministic_by_seed(tmp_path):
    a = make_synthetic_market1501(tmp_path / "a", num_ids=4, seed=7)
    b = make_synthetic_market1501(tmp_path / "b", num_ids=4, seed=7)
    c = make_synthetic_market1501(tmp_path / "c", num_ids=4, seed=8)
    da, db, dc = (_tree_digest(Path(x.root)) for x in (a, b, c))
    assert da == db and len(da) > 0
    assert da != dc
    again = make_synthetic_market1501(tmp_path / "a", num_ids=4, seed=7)
    assert again.reused and _tree_digest(Path(again.root)) == da
    # different parameters replace the folder
    other = make_synthetic_market1501(tmp_path / "a", num_ids=5, seed=7)
    assert not other.reused and len(Market1501(tmp_path / "a").query) == 5


def test_synthetic_train_split(tmp_path):
    info = make_synthetic_market1501(tmp_path, num_ids=3, with_train=True, train_ids=2, train_per_id=3)
    m = Market1501(tmp_path)
    assert info.num_train == len(m.train) == 6
    assert not {i.pid for i in m.train} & {i.pid for i in m.query}
    assert "train" in m.statistics()


def test_identity_appearance_is_retrievable(synth):
    """A crude colour descriptor already retrieves far above chance: appearance follows identity."""
    import cv2

    m = Market1501(synth[0])

    def feat(path: str) -> np.ndarray:
        img = cv2.imread(path).astype(np.float32)
        return cv2.resize(img, (2, 8), interpolation=cv2.INTER_AREA).ravel()

    qf = np.stack([feat(i.path) for i in m.query])
    gf = np.stack([feat(i.path) for i in m.gallery])
    mu = gf.mean(axis=0)
    qf, gf = qf - mu, gf - mu
    qf /= np.linalg.norm(qf, axis=1, keepdims=True)
    gf /= np.linalg.norm(gf, axis=1, keepdims=True)
    hits = 0
    for k, q in enumerate(m.query):
        valid = np.array([not (g.pid == q.pid and g.camid == q.camid) for g in m.gallery])
        order = np.argsort(-(gf[valid] @ qf[k]))
        hits += np.array([g.pid for g in m.gallery])[valid][order[0]] == q.pid
    rank1 = hits / len(m.query)
    chance = 1.0 / NUM_IDS
    assert rank1 >= 4 * chance, rank1


def test_fingerprint_and_statistics(synth, tmp_path):
    m = Market1501(synth[0])
    fp = m.fingerprint()
    assert fp == Market1501(synth[0]).fingerprint()
    assert fp["num_query"] == m.num_query and fp["num_gallery"] == len(m.gallery)
    assert fp["short"] == fp["sha256"][:12] and len(fp["sha256"]) == 64
    stats = m.statistics()
    assert "subset   | # ids | # images | # cameras" in stats
    assert f"| {NUM_IDS:5d} | {m.num_query:8d} |" in stats
    # renaming a file changes the fingerprint
    ds = tmp_path / "d"
    _touch(ds / "query", "0001_c1s1_000001_00.jpg")
    _touch(ds / "bounding_box_test", "0001_c2s1_000001_00.jpg")
    f1 = Market1501(ds).fingerprint()["sha256"]
    (ds / "query" / "0001_c1s1_000001_00.jpg").rename(ds / "query" / "0001_c3s1_000001_00.jpg")
    assert Market1501(ds).fingerprint()["sha256"] != f1
