"""Preprocessing: bit-identical to PIL, the tensor cache, bad images, the seed's .bin layout, the CLI."""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from reid_tasks.config import load_config
from reid_tasks.datasets import ImageItem, Market1501
from reid_tasks.errors import PreprocessError
from reid_tasks.preprocess import (
    TensorCache,
    add_preprocess_parser,
    load_resized,
    preprocess_dataset,
    preprocess_image,
    reference_preprocess,
    reference_resized,
)
from reid_tasks.preprocess.image import upscale2x_into
from reid_tasks.synthetic import make_synthetic_market1501

# x * (1 / (255 std)) - mean / std vs (x / 255 - mean) / std: float32 rounding only, far below one grey level
FLOAT_TOL = 1e-5


def _same_as_pil(path) -> None:
    ours, ref = load_resized(path, 256, 128), reference_resized(path, 256, 128)
    assert ours.dtype == np.uint8 and ours.shape == (256, 128, 3)
    assert np.array_equal(ours, ref), (path, int(np.abs(ours.astype(int) - ref).max()))


@pytest.fixture(scope="module")
def cfg():
    return load_config()


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    root = tmp_path_factory.mktemp("pp_synth")
    make_synthetic_market1501(root, num_ids=6, seed=1, query_per_id=1, gallery_per_id=3, num_distractors=2, num_junk=1)
    return Market1501(root)


@pytest.fixture(scope="module")
def cache(market, cfg, tmp_path_factory):
    return preprocess_dataset(market, tmp_path_factory.mktemp("pp_cache") / "cache", cfg, workers=1, progress=False)


def _textured(rng, h, w):
    img = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (5, 5), 0).astype(np.int16)
    return np.clip(img + rng.integers(-40, 40, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    "hw",
    [(128, 64), (100, 50), (97, 41), (256, 128), (300, 150), (513, 257), (64, 300)],
    ids=lambda hw: f"{hw[0]}x{hw[1]}",
)
def test_uint8_identical_to_pil_on_jpegs(tmp_path, cfg, hw):
    rng = np.random.default_rng(hw[0] * 1000 + hw[1])
    path = tmp_path / f"img_{hw[0]}x{hw[1]}.jpg"
    cv2.imwrite(str(path), _textured(rng, *hw), [cv2.IMWRITE_JPEG_QUALITY, 90])
    _same_as_pil(path)
    ours, ref = preprocess_image(path, cfg), reference_preprocess(path, cfg)
    assert ours.dtype == np.float32 and ours.shape == (3, 256, 128) == ref.shape
    assert np.abs(ours - ref).max() <= FLOAT_TOL


def test_uint8_identical_to_pil_on_other_formats(tmp_path):
    rng = np.random.default_rng(5)
    rgb = _textured(rng, 90, 40)
    gray = rgb[..., 0]
    Image.fromarray(rgb).save(tmp_path / "progressive.jpg", progressive=True, quality=85)
    Image.fromarray(_textured(rng, 128, 64)).save(tmp_path / "progressive_market.jpg", progressive=True)
    Image.fromarray(gray).save(tmp_path / "gray.jpg")
    cv2.imwrite(str(tmp_path / "gray_cv2.jpg"), gray)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    rgba = np.dstack([rgb, rng.integers(0, 256, (90, 40), dtype=np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(gray).convert("LA").save(tmp_path / "la.png")
    Image.fromarray(gray).save(tmp_path / "gray.png")
    cv2.imwrite(str(tmp_path / "deep.png"), rng.integers(0, 65536, (90, 40, 3)).astype(np.uint16))
    Image.fromarray(rgb).save(tmp_path / "rgb.bmp")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 12
    with Image.open(tmp_path / "progressive.jpg") as im:
        assert im.info.get("progressive") and im.mode == "RGB"
    with Image.open(tmp_path / "cmyk.jpg") as im:
        assert im.mode == "CMYK"
    for name in names:
        _same_as_pil(tmp_path / name)


def test_exact_2x_enlargement_equals_pil_on_every_neighbour_pair():
    """The fast path (every Market crop): all 65,536 (a, b) neighbour pairs, horizontally and vertically."""
    a = np.repeat(np.arange(256, dtype=np.uint8), 256)
    b = np.tile(np.arange(256, dtype=np.uint8), 256)
    rows = np.stack([a, b], axis=1).reshape(256, 512)  # each row: 256 pairs side by side
    rng = np.random.default_rng(3)
    for img in (
        np.dstack([rows, rows[::-1], rng.permutation(rows)]),
        np.ascontiguousarray(np.dstack([rows, rows[::-1], rows]).transpose(1, 0, 2)),
        rng.integers(0, 256, (128, 64, 3), dtype=np.uint8),
        rng.integers(0, 256, (3, 5, 3), dtype=np.uint8),
    ):
        h, w = img.shape[:2]
        ref = np.asarray(Image.fromarray(img).resize((2 * w, 2 * h), Image.BILINEAR))
        out = np.empty_like(ref)
        upscale2x_into(img, out)
        assert np.array_equal(out, ref)


def test_exif_orientation_ignored_like_pil(tmp_path):
    rgb = _textured(np.random.default_rng(9), 128, 64)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90; PIL's open() does not apply it, neither may we
    Image.fromarray(rgb).save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    _same_as_pil(tmp_path / "rot.jpg")


def test_identical_to_pil_on_every_image_of_the_demo_set(tmp_path):
    """Every image the demo's synthetic Market-1501 holds (query, gallery incl. junk, train)."""
    from reid_tasks.demo import DEMO_NUM_IDS, DEMO_SEED

    info = make_synthetic_market1501(tmp_path, num_ids=DEMO_NUM_IDS, seed=DEMO_SEED, with_train=True)
    paths = sorted(Path(info.root).rglob("*.jpg"))
    assert len(paths) > 150
    for path in paths:
        _same_as_pil(path)


def test_cache_identical_to_pil_on_every_synthetic_image(cache):
    """The stored uint8 rows are PIL's Resize([256, 128]) output, image by image."""
    for i, it in enumerate(cache.items):
        assert np.array_equal(np.asarray(cache.uint8(i, i + 1)[0]), reference_resized(it.path, 256, 128)), it.path


def test_cache_contents_equal_preprocess_image(cache, market, cfg):
    n = len(market)
    assert len(cache) == n and cache.num_query == market.num_query
    assert [it.path for it in cache.items] == [it.path for it in market.items]
    assert [it.split for it in cache.items] == market.splits()
    assert np.array_equal(cache.pids, [it.pid for it in market.items]) and cache.pids.dtype == np.int64
    assert np.array_equal(cache.camids, [it.camid for it in market.items])
    assert (cache.height, cache.width) == (256, 128)
    full = cache.batch(0, n)
    assert full.dtype == np.float32 and full.shape == (n, 3, 256, 128)
    for i, it in enumerate(cache.items):
        assert np.array_equal(full[i], preprocess_image(it.path, cfg)), it.path
    assert np.abs(full[0] - reference_preprocess(cache.items[0].path, cfg)).max() <= FLOAT_TOL
    batches = list(cache.iter_batches(4))
    assert [b.shape[0] for b in batches] == [4] * (n // 4) + ([n % 4] if n % 4 else [])
    assert np.array_equal(np.concatenate(batches), full)
    assert cache.uint8(0, 2).shape == (2, 256, 128, 3) and cache.uint8(0, 2).dtype == np.uint8
    with pytest.raises(PreprocessError, match="range"):
        cache.batch(0, n + 1)


def test_parallel_equals_serial(cache, market, cfg, tmp_path):
    threads = preprocess_dataset(market, tmp_path / "t", cfg, workers=2, progress=False)
    procs = preprocess_dataset(market, tmp_path / "p", cfg, workers=2, backend="process", progress=False)
    for other in (threads, procs):
        assert np.array_equal(np.asarray(other.uint8(0, len(other))), np.asarray(cache.uint8(0, len(cache))))
        assert other.fingerprint == cache.fingerprint and other.items == cache.items


def _copy_market(market: Market1501, dest: Path) -> Market1501:
    shutil.copytree(market.root, dest / "Market-1501-v15.09.15")
    return Market1501(dest)


def test_cache_reuse_and_invalidation(market, cfg, tmp_path):
    m = _copy_market(market, tmp_path / "src")
    out = tmp_path / "cache"
    first = preprocess_dataset(m, out, cfg, progress=False)
    assert not first.reused
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["count"] == len(m) and manifest["num_query"] == m.num_query
    assert manifest["settings"]["size"] == [256, 128] and manifest["settings"]["mean"] == list(cfg.INPUT.PIXEL_MEAN)
    assert {"path", "pid", "camid", "split"} <= set(manifest["items"][0]) and manifest["bad"] == []
    assert len(manifest["source"]["fingerprint"]) == 64
    again = preprocess_dataset(m, out, cfg, progress=False)
    assert again.reused and again.fingerprint == first.fingerprint
    # a changed input file (new content and mtime) forces a rebuild with a new content fingerprint
    victim = Path(m.gallery[0].path)
    cv2.imwrite(str(victim), np.full((128, 64, 3), 200, np.uint8))
    st = victim.stat()
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    rebuilt = preprocess_dataset(m, out, cfg, progress=False)
    assert not rebuilt.reused and rebuilt.fingerprint != first.fingerprint
    assert np.abs(rebuilt.batch(m.num_query, m.num_query + 1)[0] - preprocess_image(victim, cfg)).max() == 0
    # a changed setting rebuilds too
    small_cfg = load_config(opts=["INPUT.SIZE_TEST", "[128, 64]"])
    small = preprocess_dataset(m, out, small_cfg, progress=False)
    assert not small.reused and small.batch(0, 1).shape == (1, 3, 128, 64)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temp dirs cleaned up


def test_corrupt_images_listed_or_skipped_and_recorded(market, cfg, tmp_path):
    m = _copy_market(market, tmp_path / "src")
    truncated, garbage = Path(m.gallery[1].path), Path(m.query[0].path)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    with pytest.raises(PreprocessError) as err:
        preprocess_dataset(m, tmp_path / "cache", cfg, progress=False)
    msg = str(err.value)
    assert "2 of" in msg and str(truncated) in msg and str(garbage) in msg and "truncated" in msg
    assert not (tmp_path / "cache").exists()
    with pytest.raises(PreprocessError, match=truncated.name):
        preprocess_image(truncated, cfg)

    cache = preprocess_dataset(m, tmp_path / "cache", cfg, skip_bad=True, progress=False)
    assert len(cache) == len(m) - 2 and cache.num_query == m.num_query - 1
    assert sorted(b["path"] for b in cache.bad) == sorted([str(truncated), str(garbage)])
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert manifest["num_bad"] == 2 and len(manifest["bad"]) == 2
    kept = [it.path for it in cache.items]
    assert str(truncated) not in kept and str(garbage) not in kept
    for i in (0, len(cache) - 1):
        assert np.array_equal(cache.batch(i, i + 1)[0], preprocess_image(cache.items[i].path, cfg))
    # without skip_bad a cache holding skipped images is not silently reused
    with pytest.raises(PreprocessError, match="cannot be read"):
        preprocess_dataset(m, tmp_path / "cache", cfg, progress=False)


def test_sequence_items_and_splits(market, cfg, tmp_path):
    items = [ImageItem(*it) for it in market.gallery[:2]] + [(market.query[0].path, 5, 1, "gallery")]
    cache = preprocess_dataset(items, tmp_path / "c", cfg, progress=False)
    assert [it.split for it in cache.items] == ["gallery"] * 3 and cache.num_query == 0
    assert cache.items[2].pid == 5
    with pytest.raises(PreprocessError, match="before"):
        preprocess_dataset([(market.gallery[0].path, 1, 0, "gallery"), market.query[0]], tmp_path / "d", cfg)


def test_open_rejects_broken_cache(cache, tmp_path):
    with pytest.raises(PreprocessError, match="manifest"):
        TensorCache.open(tmp_path)
    broken = tmp_path / "b"
    shutil.copytree(cache.dir, broken)
    np.save(broken / "images.u8.npy", np.zeros((1, 256, 128, 3), np.uint8))
    with pytest.raises(PreprocessError, match="manifest says"):
        TensorCache.open(broken)
    (broken / "manifest.json").write_text("{not json")
    with pytest.raises(PreprocessError, match="unreadable manifest"):
        TensorCache.open(broken)


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="reid-validate")
    add_preprocess_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_market_root_and_single_folder(market, tmp_path, capsys):
    root = market.root.parent
    rc = _cli(["preprocess", str(root), str(tmp_path / "c"), "--workers", "2", "--seed-layout", str(tmp_path / "s")])
    out = capsys.readouterr().out
    assert rc == 0 and f"{len(market)} images ({market.num_query} query" in out and "seed layout" in out
    assert TensorCache.open(tmp_path / "c").fingerprint
    assert len(list((tmp_path / "s" / "prep_dataset").glob("*.bin"))) == len(market)
    rc = _cli(["preprocess", str(market.gallery_dir), str(tmp_path / "g"), "INPUT.SIZE_TEST", "[128, 64]"])
    gal = TensorCache.open(tmp_path / "g")
    assert rc == 0 and len(gal) == len(market.gallery) and gal.num_query == 0 and gal.height == 128
