"""Configuration: reid-strong-baseline's yacs keys plus this product's VALIDATION node.

``load_config()`` with no file gives the values of reid-strong-baseline's
``configs/softmax_triplet_with_center.yml`` (the setup the seed document validates); that yml
ships in ``reid_tasks/configs/`` so the seed's command lines work unchanged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from yacs.config import CfgNode as CN

from .errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG_FILE = CONFIG_DIR / "softmax_triplet_with_center.yml"

_C = CN()

# --------------------------------------------------------------------------- MODEL
_C.MODEL = CN()
_C.MODEL.DEVICE = "cpu"  # RSB's default is "cuda"; inference here is target-driven
_C.MODEL.DEVICE_ID = "0"
_C.MODEL.NAME = "resnet50"
_C.MODEL.LAST_STRIDE = 1
_C.MODEL.PRETRAIN_PATH = ""  # accepted for compatibility; never loaded
_C.MODEL.PRETRAIN_CHOICE = "imagenet"  # imagenet | self; accepted for compatibility
_C.MODEL.NECK = "bnneck"  # bnneck | no
_C.MODEL.IF_WITH_CENTER = "yes"
_C.MODEL.METRIC_LOSS_TYPE = "triplet_center"
_C.MODEL.IF_LABELSMOOTH = "on"

# --------------------------------------------------------------------------- INPUT
_C.INPUT = CN()
_C.INPUT.SIZE_TRAIN = [256, 128]
_C.INPUT.SIZE_TEST = [256, 128]  # [height, width]
_C.INPUT.PROB = 0.5
_C.INPUT.RE_PROB = 0.5
_C.INPUT.PIXEL_MEAN = [0.485, 0.456, 0.406]
_C.INPUT.PIXEL_STD = [0.229, 0.224, 0.225]
_C.INPUT.PADDING = 10

# --------------------------------------------------------------------------- DATASETS
_C.DATASETS = CN()
_C.DATASETS.NAMES = "market1501"
_C.DATASETS.ROOT_DIR = ""  # Market-1501 root; empty: not configured (a run must name one, or be a demo)

# --------------------------------------------------------------------------- DATALOADER (training only)
_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 8
_C.DATALOADER.SAMPLER = "softmax_triplet"
_C.DATALOADER.NUM_INSTANCE = 4

# --------------------------------------------------------------------------- SOLVER (training only)
_C.SOLVER = CN()
_C.SOLVER.OPTIMIZER_NAME = "Adam"
_C.SOLVER.MAX_EPOCHS = 120
_C.SOLVER.BASE_LR = 0.00035
_C.SOLVER.BIAS_LR_FACTOR = 1
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.MARGIN = 0.3
_C.SOLVER.CLUSTER_MARGIN = 0.3
_C.SOLVER.CENTER_LR = 0.5
_C.SOLVER.CENTER_LOSS_WEIGHT = 0.0005
_C.SOLVER.RANGE_K = 2
_C.SOLVER.RANGE_MARGIN = 0.3
_C.SOLVER.RANGE_ALPHA = 0
_C.SOLVER.RANGE_BETA = 1
_C.SOLVER.RANGE_LOSS_WEIGHT = 1
_C.SOLVER.WEIGHT_DECAY = 0.0005
_C.SOLVER.WEIGHT_DECAY_BIAS = 0.0005
_C.SOLVER.GAMMA = 0.1
_C.SOLVER.STEPS = [40, 70]
_C.SOLVER.WARMUP_FACTOR = 0.01
_C.SOLVER.WARMUP_ITERS = 10
_C.SOLVER.WARMUP_METHOD = "linear"
_C.SOLVER.CHECKPOINT_PERIOD = 40
_C.SOLVER.LOG_PERIOD = 20
_C.SOLVER.EVAL_PERIOD = 40
_C.SOLVER.IMS_PER_BATCH = 64

# --------------------------------------------------------------------------- TEST
_C.TEST = CN()
_C.TEST.IMS_PER_BATCH = 128
_C.TEST.RE_RANKING = "no"  # yes | no
_C.TEST.WEIGHT = ""
_C.TEST.NECK_FEAT = "after"  # after | before
_C.TEST.FEAT_NORM = "yes"  # yes | no

_C.OUTPUT_DIR = ""

# --------------------------------------------------------------------------- VALIDATION (this product)
_C.VALIDATION = CN()
# Where datasets, caches, artifacts and the embedded SQLite results database live.
# Empty: $REID_DATA_DIR, else ~/.cache/reid-validate.
_C.VALIDATION.DATA_DIR = ""
# Per-run artifact directories go under this root (shared storage in multi-host deployments).
_C.VALIDATION.ARTIFACTS_ROOT = ""
# Results database URL; empty: REID_RESULTS_DB_URL > Airflow connection > SQLite under DATA_DIR.
_C.VALIDATION.RESULTS_DB_URL = ""
_C.VALIDATION.SCHEDULE = "0 2 * * *"
# Deployment settings that guard the trigger boundary (see reid_tasks.settings; never settable by a trigger).
# Paths a trigger names (checkpoint, dataset, config file) must resolve under one of these; empty: the data dir.
_C.VALIDATION.ALLOWED_ROOTS = []
# Allow demo runs (synthetic Market-1501 + demo checkpoint) when neither a checkpoint nor a dataset is
# configured; `make demo` / `make airflow` set it. Off: such a run fails saying what to configure.
_C.VALIDATION.DEMO = False
# Load pickled whole-model checkpoints (torch.load(weights_only=False): runs code from the file).
_C.VALIDATION.TRUST_CHECKPOINT = False
_C.VALIDATION.TARGETS = ["onnxruntime"]
_C.VALIDATION.BATCH_SIZES = [1, 16]
_C.VALIDATION.PRECISIONS = ["fp32"]
_C.VALIDATION.ONNX_OPSET = 11
# Preprocessing workers; 0 = one per core.
_C.VALIDATION.WORKERS = 0
# Leave corrupt images out (counted and listed in the cache manifest) instead of failing.
_C.VALIDATION.SKIP_BAD = False
# Also benchmark every artifact in pure-inference mode (generated input, no file I/O).
_C.VALIDATION.PURE = True

# Retention (`reid-validate gc`, the daily reid_maintenance DAG): a finished run's directory is kept while it is
# among the newest KEEP_RUNS finished runs or younger than KEEP_DAYS (0 = criterion off); caches and seed layouts
# while a kept run uses them. A run with no change for STALE_HOURS and no finish is treated as dead.
_C.VALIDATION.RETENTION = CN()
_C.VALIDATION.RETENTION.KEEP_DAYS = 30
_C.VALIDATION.RETENTION.KEEP_RUNS = 20
_C.VALIDATION.RETENTION.STALE_HOURS = 24

# Published accuracy of the released checkpoint, in percent.
_C.VALIDATION.REFERENCE = CN()
_C.VALIDATION.REFERENCE.RANK1 = 94.5
_C.VALIDATION.REFERENCE.MAP = 85.9

_C.VALIDATION.BENCH = CN()
_C.VALIDATION.BENCH.WARMUP = 2  # batches run before timing
_C.VALIDATION.BENCH.REPEATS = 3  # timed repetitions (best and median reported)
_C.VALIDATION.BENCH.PURE_BATCHES = 20  # batches per repetition in pure-inference mode
_C.VALIDATION.BENCH.PURE_DATA = "random"  # random | zero
# One dataset pass per artifact (features + end-to-end throughput); REPEATS applies to the pure benchmark.
_C.VALIDATION.BENCH.TASK_TIMEOUT_S = 3 * 3600  # the benchmark task's execution timeout (parse time)
_C.VALIDATION.BENCH.MIN_THROUGHPUT = 5.0  # end-to-end img/s assumed for the dataset pass when PURE is off

# Parity of every artifact against the PyTorch fp32 reference.
_C.VALIDATION.PARITY = CN()
_C.VALIDATION.PARITY.EXPORT_MAX_ABS = 1e-4  # ONNX vs PyTorch at export
_C.VALIDATION.PARITY.FP32_MAX_ABS = 1e-3
_C.VALIDATION.PARITY.REDUCED_MIN_COSINE = 0.99
_C.VALIDATION.PARITY.REDUCED_MAX_METRIC_DROP = 0.5  # pt of Rank-1 / mAP vs fp32
# Images (first N in dataset order) on which the PyTorch fp32 reference is computed for parity; when it
# covers the whole set, reference metrics are computed too and reduced precisions are compared with them.
_C.VALIDATION.PARITY.SAMPLE = 512

# int8 post-training quantisation.
_C.VALIDATION.CALIBRATION = CN()
_C.VALIDATION.CALIBRATION.NUM_IMAGES = 64  # first N query images
_C.VALIDATION.CALIBRATION.SEED = 0

# Regression rules (see reid_tasks.results.rules).
_C.VALIDATION.RULES = CN()
_C.VALIDATION.RULES.REF_ACC_TOLERANCE = 1.0  # pt below the reference
_C.VALIDATION.RULES.HISTORY_ACC_DROP = 0.3  # pt below the median of the last good runs
_C.VALIDATION.RULES.HISTORY_ACC_RUNS = 10
_C.VALIDATION.RULES.BATCH_INVARIANCE = 0.1  # pt between batch B and batch 1
_C.VALIDATION.RULES.PERF_Z = 5.0
_C.VALIDATION.RULES.PERF_MIN_CHANGE = 0.05  # fraction
_C.VALIDATION.RULES.PERF_LOOKBACK = 100
_C.VALIDATION.RULES.PERF_MIN_HISTORY = 5
_C.VALIDATION.RULES.REF_PERF_TOLERANCE = 0.05
# Change-point detection of perf_history / accuracy_history (reid_tasks/results/detect.py, chosen by
# benchmarks/bench_detect.py): smallest perf change that alerts (fraction), robust z of the new level, the
# Mann-Whitney test's level, and how many runs before a change form its "before" level.
_C.VALIDATION.RULES.CHANGE_MIN_EFFECT = 0.04
_C.VALIDATION.RULES.CHANGE_Z = 4.0
_C.VALIDATION.RULES.CHANGE_ALPHA = 0.01
_C.VALIDATION.RULES.CHANGE_WINDOW = 40
# (target, device kind, batch size, card throughput in samples/s): the seed's Ascend 310 figures, i.e. its
# measured "Interface throughputRate" x 4 chips. The seed's text has two multiplication slips (bs4:
# 469.146 x 4 written as 1984.584, bs8: 551.773 x 4 written as 2206.932); the products of its measurements
# are used, so a run that reproduces the seed's own numbers does not alert.
_C.VALIDATION.RULES.REFERENCE_THROUGHPUT = [
    ["ascend310", "Ascend310", 1, 1446.188],
    ["ascend310", "Ascend310", 4, 1876.584],
    ["ascend310", "Ascend310", 8, 2207.092],
    ["ascend310", "Ascend310", 16, 2588.56],
    ["ascend310", "Ascend310", 32, 2068.128],
]

# Each inference target may contribute a node of its own under VALIDATION (e.g. VALIDATION.ASCEND): its defaults
# and choices are declared on the target class (reid_tasks.targets.Target.config_node) and merged here.

_CHOICES: dict[str, tuple[str, ...]] = {
    "MODEL.NAME": ("resnet50",),
    "MODEL.NECK": ("bnneck", "no"),
    "MODEL.PRETRAIN_CHOICE": ("imagenet", "self"),
    "TEST.NECK_FEAT": ("after", "before"),
    "TEST.FEAT_NORM": ("yes", "no"),
    "TEST.RE_RANKING": ("yes", "no"),
    "VALIDATION.BENCH.PURE_DATA": ("random", "zero"),
}


def get_defaults() -> CN:
    """A fresh, mutable copy of the default tree, with every registered target's config node."""
    cfg = _C.clone()
    for node, (defaults, _) in _target_nodes().items():
        if node in cfg.VALIDATION:
            raise ConfigError(f"a target's config node VALIDATION.{node} collides with a product key")
        cfg.VALIDATION[node] = CN(json.loads(json.dumps(defaults)))  # deep copy: lists stay the target's own
    return cfg


def _target_nodes() -> dict[str, tuple[dict[str, Any], dict[str, tuple[Any, ...]]]]:
    from .targets import config_nodes

    return config_nodes()


def _choices() -> dict[str, tuple[Any, ...]]:
    """Allowed values per dotted key: the product's and each target node's."""
    out = dict(_CHOICES)
    for node, (_, choices) in _target_nodes().items():
        out.update({f"VALIDATION.{node}.{key}": allowed for key, allowed in choices.items()})
    return out


def load_config(config_file: str | os.PathLike[str] | None = None, opts: Sequence[str] | Iterable[Any] = ()) -> CN:
    """Defaults, then ``config_file`` (yml), then "KEY VALUE" pairs; validated and frozen.

    Values in ``opts`` are parsed like yacs' ``merge_from_list`` (``"('before')"`` -> ``'before'``).
    """
    cfg = get_defaults()
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            cfg.merge_from_file(str(path))
        except KeyError as exc:
            raise ConfigError(f"{path}: unknown config key {exc.args[0]!s}") from exc
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        except Exception as exc:  # yaml errors
            raise ConfigError(f"{path}: cannot parse: {exc}") from exc
    opts = list(opts)
    if len(opts) % 2:
        raise ConfigError(f"config overrides must be KEY VALUE pairs, got an odd count: {opts}")
    for key, value in zip(opts[0::2], opts[1::2], strict=True):
        _merge_one(cfg, str(key), value)
    _validate(cfg)
    cfg.freeze()
    return cfg


def _merge_one(cfg: CN, key: str, value: Any) -> None:
    node = cfg
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        if part not in node or not isinstance(node[part], CN):
            raise ConfigError(f"unknown config key {key!r} (no node {'.'.join(parts[: i + 1])!r})")
        node = node[part]
    if parts[-1] not in node:
        raise ConfigError(f"unknown config key {key!r}; valid keys here: {sorted(node.keys())}")
    if isinstance(node[parts[-1]], float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)  # yacs refuses 95 for a float key
    try:
        cfg.merge_from_list([key, value])
    except (ValueError, TypeError, AssertionError) as exc:
        raise ConfigError(f"config key {key!r}: bad value {value!r}: {exc}") from exc


def _validate(cfg: CN) -> None:
    for key, allowed in _choices().items():
        value = select(cfg, key)
        if value not in allowed:
            raise ConfigError(f"config key {key}: {value!r} is not one of {list(allowed)}")
    size = list(cfg.INPUT.SIZE_TEST)
    if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
        raise ConfigError(f"config key INPUT.SIZE_TEST: expected [height, width], got {size!r}")
    for key in ("INPUT.PIXEL_MEAN", "INPUT.PIXEL_STD"):
        if len(select(cfg, key)) != 3:
            raise ConfigError(f"config key {key}: expected 3 values, got {select(cfg, key)!r}")
    if cfg.MODEL.LAST_STRIDE not in (1, 2):
        raise ConfigError(f"config key MODEL.LAST_STRIDE: expected 1 or 2, got {cfg.MODEL.LAST_STRIDE!r}")
    bad = [b for b in cfg.VALIDATION.BATCH_SIZES if not isinstance(b, int) or not 1 <= b <= 256]
    if bad or len(set(cfg.VALIDATION.BATCH_SIZES)) != len(cfg.VALIDATION.BATCH_SIZES):
        raise ConfigError(
            f"config key VALIDATION.BATCH_SIZES: unique integers 1..256 expected, got {cfg.VALIDATION.BATCH_SIZES!r}"
        )


def select(cfg: CN, key: str) -> Any:
    """Value at a dotted key (``select(cfg, "TEST.NECK_FEAT")``)."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, CN) or part not in node:
            raise ConfigError(f"unknown config key {key!r}")
        node = node[part]
    return node


def overrides(cfg: CN) -> dict[str, Any]:
    """Flat {dotted key: value} of every value that differs from the product defaults."""
    out: dict[str, Any] = {}

    def walk(node: CN, ref: CN, prefix: str) -> None:
        for k, v in node.items():
            key = f"{prefix}{k}"
            if isinstance(v, CN):
                walk(v, ref[k], key + ".")
            elif _plain(v) != _plain(ref[k]):
                out[key] = _plain(v)

    walk(cfg, get_defaults(), "")
    return out


def as_opts(values: dict[str, Any]) -> list[Any]:
    """{dotted key: value} as a flat KEY VALUE list that ``load_config`` merges back to the same values
    (strings are quoted, so yacs' literal decoding cannot turn "0" into 0)."""
    return [x for k, v in values.items() for x in (k, repr(v) if isinstance(v, str) else v)]


def _plain(v: Any) -> Any:
    return list(_plain(x) for x in v) if isinstance(v, list | tuple) else v


def data_dir(cfg: CN | None = None) -> Path:
    """The product's data directory: VALIDATION.DATA_DIR, $REID_DATA_DIR, ~/.cache/reid-validate."""
    value = cfg.VALIDATION.DATA_DIR if cfg is not None else ""
    path = Path(value or os.environ.get("REID_DATA_DIR") or Path.home() / ".cache" / "reid-validate")
    return path.expanduser()


def artifacts_root(cfg: CN) -> Path:
    """Root of per-run artifact directories: VALIDATION.ARTIFACTS_ROOT, $REID_ARTIFACTS_ROOT, <data dir>/runs.

    In a multi-host deployment this must be storage every worker sees.
    """
    value = cfg.VALIDATION.ARTIFACTS_ROOT or os.environ.get("REID_ARTIFACTS_ROOT")
    return Path(value).expanduser() if value else data_dir(cfg) / "runs"


def image_size(cfg: CN) -> tuple[int, int]:
    """(height, width) of the model input."""
    h, w = cfg.INPUT.SIZE_TEST
    return int(h), int(w)
