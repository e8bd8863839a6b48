from pathlib import Path

import pytest

from reid_tasks.config import DEFAULT_CONFIG_FILE, load_config, overrides, select
from reid_tasks.errors import ConfigError


def test_defaults_are_softmax_triplet_with_center():
    cfg = load_config()
    assert list(cfg.INPUT.SIZE_TEST) == [256, 128]
    assert cfg.TEST.NECK_FEAT == "after" and cfg.TEST.FEAT_NORM == "yes" and cfg.TEST.RE_RANKING == "no"
    assert cfg.MODEL.NAME == "resnet50" and cfg.MODEL.LAST_STRIDE == 1 and cfg.MODEL.NECK == "bnneck"
    assert list(cfg.INPUT.PIXEL_MEAN) == [0.485, 0.456, 0.406]
    assert list(cfg.INPUT.PIXEL_STD) == [0.229, 0.224, 0.225]
    assert cfg.TEST.IMS_PER_BATCH == 128
    # merging the shipped yml changes nothing: the defaults are that file
    assert overrides(load_config(DEFAULT_CONFIG_FILE)) == {}
    assert cfg.is_frozen()


def test_seed_command_line_values():
    opts = [
        "MODEL.PRETRAIN_CHOICE",
        "('self')",
        "TEST.WEIGHT",
        "('market_resnet50_model_120_rank1_945.pth')",
        "TEST.NECK_FEAT",
        "('before')",
        "TEST.FEAT_NORM",
        "('no')",
    ]
    cfg = load_config(DEFAULT_CONFIG_FILE, opts)
    assert cfg.MODEL.PRETRAIN_CHOICE == "self"
    assert cfg.TEST.WEIGHT == "market_resnet50_model_120_rank1_945.pth"
    assert cfg.TEST.NECK_FEAT == "before" and cfg.TEST.FEAT_NORM == "no"
    assert overrides(cfg) == {
        "MODEL.PRETRAIN_CHOICE": "self",
        "TEST.WEIGHT": "market_resnet50_model_120_rank1_945.pth",
        "TEST.NECK_FEAT": "before",
        "TEST.FEAT_NORM": "no",
    }


def test_original_rsb_yml_is_accepted(tmp_path: Path):
    # the upstream file still carries its author's paths; it must merge unchanged
    text = DEFAULT_CONFIG_FILE.read_text().replace("PRETRAIN_PATH: ''", "PRETRAIN_PATH: '/home/x/resnet50.pth'")
    text = text.replace('WEIGHT: ""', 'WEIGHT: "path"')
    f = tmp_path / "softmax_triplet_with_center.yml"
    f.write_text(text)
    cfg = load_config(f)
    assert cfg.TEST.WEIGHT == "path" and cfg.MODEL.PRETRAIN_PATH == "/home/x/resnet50.pth"


@pytest.mark.parametrize(
    "opts, match",
    [
        (["TEST.NECK_FEATS", "after"], "unknown config key 'TEST.NECK_FEATS'"),
        (["NOPE.KEY", "1"], "unknown config key 'NOPE.KEY'"),
        (["TEST.NECK_FEAT", "middle"], "TEST.NECK_FEAT: 'middle' is not one of"),
        (["TEST.IMS_PER_BATCH"], "KEY VALUE pairs"),
        (["VALIDATION.BATCH_SIZES", "[1, 1]"], "VALIDATION.BATCH_SIZES"),
        (["VALIDATION.BATCH_SIZES", "[0]"], "VALIDATION.BATCH_SIZES"),
        (["INPUT.SIZE_TEST", "'big'"], "INPUT.SIZE_TEST"),
    ],
)
def test_bad_overrides(opts, match):
    with pytest.raises(ConfigError, match=match):
        load_config(opts=opts)


def test_unknown_key_in_yml(tmp_path: Path):
    f = tmp_path / "bad.yml"
    f.write_text("TEST:\n  WHATEVER: 1\n")
    with pytest.raises(ConfigError, match=r"bad.yml: unknown config key"):
        load_config(f)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yml")


def test_select():
    cfg = load_config()
    assert select(cfg, "VALIDATION.REFERENCE.RANK1") == 94.5
    with pytest.raises(ConfigError):
        select(cfg, "VALIDATION.NOPE")
