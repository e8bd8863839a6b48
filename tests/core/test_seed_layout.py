"""The seed's .bin + info layout: bytes, one shared copy per cache, concurrent writers, disk space, pairing."""

from __future__ import annotations

import errno
import glob
import multiprocessing as mp
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from reid_tasks import storage
from reid_tasks.config import load_config
from reid_tasks.datasets import Market1501
from reid_tasks.errors import PreprocessError
from reid_tasks.preprocess import preprocess_dataset, preprocess_image, seed_layout, shared_layout_dir
from reid_tasks.storage import DiskSpaceError
from reid_tasks.synthetic import make_synthetic_market1501


@pytest.fixture(scope="module")
def cfg():
    return load_config()


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    root = tmp_path_factory.mktemp("sl_synth")
    make_synthetic_market1501(root, num_ids=5, seed=2, query_per_id=1, gallery_per_id=2, num_distractors=2, num_junk=3)
    return Market1501(root)


@pytest.fixture()
def cache(market, cfg, tmp_path):
    return preprocess_dataset(market, tmp_path / "cache" / "market", cfg, workers=1, progress=False)


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.endswith((".tmp", ".old"))]


def test_seed_layout_bytes_and_info_file(cache, cfg):
    layout = cache.seed_layout(progress=False)
    assert layout.bin_dir.parent == shared_layout_dir(cache)
    assert shared_layout_dir(cache).parent == cache.dir.parent / "_seed_layouts"
    assert layout.stems == [Path(it.path).name.split(".")[0] for it in cache.items]
    assert len(list(layout.bin_dir.glob("*.bin"))) == len(cache)
    lines = layout.info_path.read_text().splitlines()
    assert len(lines) == len(cache)
    for i, (line, item) in enumerate(zip(lines, cache.items, strict=True)):
        idx, path, width, height = line.split(" ")
        assert (int(idx), width, height) == (i, "128", "256")
        assert Path(path).is_absolute() and Path(path) == layout.bin_dir / f"{Path(item.path).stem}.bin"
        data = Path(path).read_bytes()
        assert len(data) == 393216
        assert data == preprocess_image(item.path, cfg).tobytes()


def test_written_once_and_shared(cache, market, cfg, tmp_path):
    first = cache.seed_layout(progress=False)
    mtime = first.info_path.stat().st_mtime_ns
    # a second cache of the same images beside the first (another run's view) shares the layout
    other = preprocess_dataset(market, tmp_path / "cache" / "copy", cfg, workers=1, progress=False)
    assert other.fingerprint == cache.fingerprint
    again = other.seed_layout(progress=False)
    assert again == first and first.info_path.stat().st_mtime_ns == mtime
    assert [p.name for p in (tmp_path / "cache" / "_seed_layouts").iterdir() if not p.name.startswith(".")] == [
        cache.fingerprint[:32]
    ]
    # an explicit directory (CLI --seed-layout) is its own copy; a broken one is rebuilt
    explicit = cache.write_seed_layout(tmp_path / "explicit", progress=False)
    assert explicit.bin_dir == tmp_path / "explicit" / "prep_dataset"
    (tmp_path / "explicit" / ".complete.json").unlink()
    cache.write_seed_layout(tmp_path / "explicit", progress=False)
    assert (tmp_path / "explicit" / ".complete.json").is_file()


def test_rejects_stem_collision(market, cfg, tmp_path):
    a = tmp_path / "a" / market.query[0].path.rsplit("/", 1)[1]
    a.parent.mkdir()
    shutil.copy(market.query[0].path, a)
    cache = preprocess_dataset([market.query[0], (str(a), 1, 0, "query")], tmp_path / "c", cfg, progress=False)
    with pytest.raises(PreprocessError, match="unique"):
        cache.seed_layout(progress=False)


def _writer(cache_dir: str, log_path: str, go: float) -> None:
    from reid_tasks.preprocess import TensorCache

    original = seed_layout._write

    def slow_write(*args, **kwargs):
        with open(log_path, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.5)  # hold the lock long enough for the other writer to arrive
        original(*args, **kwargs)

    seed_layout._write = slow_write
    time.sleep(max(go - time.time(), 0))
    layout = TensorCache.open(cache_dir).seed_layout(progress=False)
    assert len(list(layout.bin_dir.glob("*.bin"))) == len(layout.stems)


def test_two_processes_write_once_and_both_get_a_complete_layout(cache, cfg, tmp_path):
    ctx = mp.get_context("fork")
    log_path = tmp_path / "writes.log"
    go = time.time() + 0.3
    procs = [ctx.Process(target=_writer, args=(str(cache.dir), str(log_path), go)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(log_path.read_text().splitlines()) == 1  # the second writer waited and reused
    layout = cache.seed_layout(progress=False)
    for item, stem in zip(cache.items[:3], layout.stems, strict=False):
        assert (layout.bin_dir / f"{stem}.bin").read_bytes() == preprocess_image(item.path, cfg).tobytes()
    assert _leftovers(shared_layout_dir(cache).parent) == []


def test_refuses_before_writing_when_space_is_short(cache, monkeypatch):
    monkeypatch.setattr(storage, "CHECK_ABOVE_BYTES", 0)
    monkeypatch.setattr(storage, "free_bytes", lambda path: 1000)
    with pytest.raises(DiskSpaceError) as err:
        cache.seed_layout(progress=False)
    msg = str(err.value)
    assert "not enough free space" in msg and "needs" in msg and "1000 B free" in msg
    assert str(cache.dir.parent / "_seed_layouts") in msg
    assert not shared_layout_dir(cache).exists()


def test_disk_full_while_writing_leaves_nothing_and_names_the_path(cache, monkeypatch):
    real_write_text = Path.write_text

    def full(self, *args, **kwargs):
        if self.name == "prep_bin.info":  # every .bin is written, then the volume is full
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(DiskSpaceError) as err:
        cache.seed_layout(progress=False)
    assert "disk full while writing the seed's .bin layout" in str(err.value)
    assert str(shared_layout_dir(cache)) in str(err.value)
    parent = shared_layout_dir(cache).parent
    assert not shared_layout_dir(cache).exists() and _leftovers(parent) == []
    monkeypatch.setattr(Path, "write_text", real_write_text)
    assert cache.seed_layout(progress=False).info_path.is_file()  # the next try succeeds


def _postprocess_pairs(label_dir: str, pred_dir: str) -> list[tuple[str, int, int, np.ndarray]]:
    """ReID_postprocess.py get_pred_label, transcribed: glob the image folder, skip junk, read <name>_1.bin."""
    pattern = re.compile(r"([-\d]+)_c(\d)")
    outputs = []
    for img_path in glob.glob(os.path.join(label_dir, "*.jpg")):
        pid, camid = map(int, pattern.search(img_path).groups())
        if pid == -1:
            continue
        filename = img_path.split("/")[-1]
        bin_file = filename[:-8] + "_1.bin" if filename[-8:] == ".jpg.jpg" else filename[:-4] + "_1.bin"
        outputs.append((img_path, pid, camid - 1, np.fromfile(os.path.join(pred_dir, bin_file), dtype="float32")))
    return outputs


def _fake_feature(bin_path: str | Path) -> np.ndarray:
    x = np.fromfile(bin_path, dtype=np.float32)
    return (x[:2048] + x[-2048:]).astype(np.float32)  # 2,048 floats that depend on the image


def test_seed_postprocess_pairs_outputs_of_our_layout(cache, market, tmp_path):
    """benchmark.x86_64 run on our info file (simulated: one 2,048-float output per line, named as the tool
    names it) and the seed's postprocess pairing over the original folders find every output, right image."""
    assert any(Path(p).name.startswith("-1_") for p in glob.glob(str(market.gallery_dir / "*.jpg")))
    layout = cache.seed_layout(progress=False)
    pred = tmp_path / "result" / "dumpOutput_device0"
    pred.mkdir(parents=True)
    for line in layout.info_path.read_text().splitlines():
        _, path, _, _ = line.split(" ")
        _fake_feature(path).tofile(pred / (Path(path).stem + "_1.bin"))
    pairs = _postprocess_pairs(str(market.query_dir), str(pred)) + _postprocess_pairs(
        str(market.gallery_dir), str(pred)
    )
    assert len(pairs) == len(cache)  # junk: skipped by the seed's postprocess, absent from our layout
    by_path = {it.path: it for it in cache.items}
    for img_path, pid, camid, feat in pairs:
        item = by_path[str(Path(img_path).absolute())]
        assert (pid, camid) == (item.pid, item.camid)
        assert np.array_equal(feat, _fake_feature(layout.bin_dir / f"{Path(img_path).name.split('.')[0]}.bin"))


def test_cache_build_refuses_before_writing_when_space_is_short(market, cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "CHECK_ABOVE_BYTES", 0)
    monkeypatch.setattr(storage, "free_bytes", lambda path: 5 * 1024**2)
    with pytest.raises(DiskSpaceError, match=r"tensor cache of \d+ images at .*needs .* 5\.0 MiB free"):
        preprocess_dataset(market, tmp_path / "cache" / "m", cfg, workers=1, progress=False)
    assert not (tmp_path / "cache" / "m").exists() and list((tmp_path / "cache").iterdir()) == []
