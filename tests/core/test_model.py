from pathlib import Path

import pytest
import torch

from reid_tasks.config import load_config
from reid_tasks.errors import CheckpointError
from reid_tasks.model import build_model, load_checkpoint, read_state_dict

# The released market_resnet50_model_120_rank1_945.pth: every key of the Baseline with bnneck.
RELEASED_PREFIXES = {"base.conv1", "base.bn1", "bottleneck", "classifier"} | {f"base.layer{i}" for i in range(1, 5)}


def test_keys_match_released_layout():
    sd = build_model(load_config()).state_dict()
    assert {".".join(k.split(".")[:2]) if k.startswith("base.") else k.split(".")[0] for k in sd} == RELEASED_PREFIXES
    assert sd["classifier.weight"].shape == (751, 2048)
    assert sd["base.conv1.weight"].shape == (64, 3, 7, 7)
    assert "base.layer4.0.downsample.0.weight" in sd and "base.layer4.0.downsample.1.running_var" in sd
    assert "bottleneck.num_batches_tracked" in sd and "classifier.bias" not in sd
    assert not any(k.startswith("base.fc") for k in sd)
    assert len([k for k in sd if k.endswith("conv2.weight")]) == 16


def test_structure_and_outputs():
    cfg = load_config()
    m = build_model(cfg)
    assert not m.training
    # no ReLU between the stem's bn1 and maxpool (reid-strong-baseline): negative values reach layer1
    with torch.no_grad():
        stem = m.base.maxpool(m.base.bn1(m.base.conv1(torch.randn(1, 3, 64, 32))))
    assert (stem < 0).any()
    x_small = torch.randn(1, 3, 64, 32)
    b = m.base
    with torch.no_grad():
        manual = b.layer4(b.layer3(b.layer2(b.layer1(b.maxpool(b.bn1(b.conv1(x_small)))))))
        assert torch.allclose(b(x_small), manual)
    assert not any(isinstance(c, torch.nn.ReLU) for c in m.base.children())
    x = torch.randn(2, 3, 256, 128)
    with torch.no_grad():
        fmap = m.base(x)
        assert fmap.shape == (2, 2048, 16, 8)  # LAST_STRIDE 1
        after = m(x)
        gf = fmap.mean((2, 3))
        assert torch.allclose(after, m.bottleneck(gf), atol=1e-5)
    before = build_model(load_config(opts=["TEST.NECK_FEAT", "before"]))
    before.load_state_dict(m.state_dict())
    with torch.no_grad():
        assert torch.allclose(before(x), gf, atol=1e-5)
    assert not m.bottleneck.bias.requires_grad
    s2 = build_model(load_config(opts=["MODEL.LAST_STRIDE", "2"]))
    with torch.no_grad():
        assert s2.base(x).shape == (2, 2048, 8, 4)


def _save(obj, path: Path) -> Path:
    torch.save(obj, path)
    return path


def test_load_variants(tmp_path: Path, demo_checkpoint: Path):
    cfg = load_config()
    flat = torch.load(demo_checkpoint, weights_only=True)
    ref = build_model(cfg)
    load_checkpoint(ref, demo_checkpoint)
    x = torch.randn(1, 3, 256, 128)
    with torch.no_grad():
        want = ref(x)
    variants = {
        "wrapped_model": {"model": flat},
        "wrapped_state_dict": {"state_dict": flat, "epoch": 3},
        "module_prefix": {f"module.{k}": v for k, v in flat.items()},
        "other_class_count": {**flat, "classifier.weight": torch.zeros(1041, 2048)},
    }
    for name, obj in variants.items():
        m = build_model(cfg)
        load_checkpoint(m, _save(obj, tmp_path / f"{name}.pth"))
        with torch.no_grad():
            assert torch.equal(m(x), want), name


def test_missing_unexpected_and_shapes_named(tmp_path: Path, demo_checkpoint: Path):
    flat = torch.load(demo_checkpoint, weights_only=True)
    bad = dict(flat)
    del bad["base.layer3.2.bn2.running_mean"]
    del bad["bottleneck.weight"]
    bad["base.extra.weight"] = torch.zeros(3)
    bad["base.layer1.0.conv1.weight"] = torch.zeros(64, 64, 3, 3)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(build_model(load_config()), _save(bad, tmp_path / "bad.pth"))
    msg = str(err.value)
    assert "base.layer3.2.bn2.running_mean" in msg and "bottleneck.weight" in msg
    assert "unexpected keys (1): base.extra.weight" in msg
    assert "base.layer1.0.conv1.weight: checkpoint (64, 64, 3, 3) vs model (64, 64, 1, 1)" in msg
    assert "bad.pth" in msg


def test_pickled_whole_model_needs_trust(tmp_path: Path):
    m = build_model(load_config())
    path = _save(m, tmp_path / "ignite.pth")
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):
        read_state_dict(path)
    load_checkpoint(build_model(load_config()), path, trust=True)


def test_not_a_checkpoint(tmp_path: Path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        read_state_dict(tmp_path / "none.pth")
    with pytest.raises(CheckpointError, match="not a reid-strong-baseline checkpoint"):
        read_state_dict(_save([1, 2, 3], tmp_path / "list.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match=r"junk\.pth"):
        read_state_dict(tmp_path / "junk.pth")
