"""The run's inputs, prepared once for every artifact: the ONNX export, the tensor cache, the int8 calibration set
and the PyTorch reference features the parity gate compares with."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .. import calibration
from ..retention import record_storage
from ..utils import atomic_save_npy
from .context import cfg_of


def export_model(ctx: Mapping[str, Any]) -> dict[str, Any]:
    """Checkpoint -> ONNX in the run directory; the export report as a dict."""
    from ..export import export_onnx

    report = export_onnx(cfg_of(ctx), Path(ctx["run_dir"]) / "onnx" / "ReID.onnx", trust=ctx["trust_checkpoint"])
    return report.to_dict()


def preprocess_data(ctx: Mapping[str, Any]) -> dict[str, Any]:
    """Dataset -> tensor cache (shared across runs; reused when images and settings are unchanged)."""
    from ..datasets import Market1501
    from ..preprocess import preprocess_dataset

    cfg = cfg_of(ctx)
    dataset = Market1501(ctx["dataset_root"])
    cache = preprocess_dataset(
        dataset, ctx["cache_dir"], cfg, workers=int(cfg.VALIDATION.WORKERS) or None, skip_bad=cfg.VALIDATION.SKIP_BAD
    )
    record_storage(ctx["run_dir"], cache.dir, cache.fingerprint)  # `reid-validate gc` keeps what the run uses
    return {
        "cache_dir": str(cache.dir),
        "fingerprint": cache.fingerprint,
        "dataset_fingerprint": dataset.fingerprint(),
        "num_query": int(cache.num_query),
        "count": len(cache),
        "num_gallery": len(cache) - int(cache.num_query),
        "bad": list(cache.bad),
    }


def calibration_set(ctx: Mapping[str, Any]) -> Any:
    """The int8 calibration images of the run's dataset, preprocessed, with their record (reid_tasks.calibration)."""
    from ..datasets import Market1501

    return calibration.calibration_set(cfg_of(ctx), Market1501(ctx["dataset_root"]))


def _needs_full_reference(ctx: Mapping[str, Any]) -> bool:
    """True when a planned reduced-precision artifact has no fp32 artifact of its target in the run: its
    Rank-1/mAP are then compared with the PyTorch reference over the full set."""
    from .artifact import plan_combinations

    combos = plan_combinations(ctx)
    fp32 = {c["target"] for c in combos if c["precision"] == "fp32"}
    return any(c["precision"] != "fp32" and c["target"] not in fp32 for c in combos)


class _Rows:
    """The rows ``indices`` of a TensorCache as a batch source."""

    def __init__(self, cache: Any, indices: np.ndarray) -> None:
        self.cache, self.indices = cache, indices

    def __len__(self) -> int:
        return len(self.indices)

    def batch(self, start: int, stop: int) -> np.ndarray:
        return np.concatenate([self.cache.batch(int(i), int(i) + 1) for i in self.indices[start:stop]])


def reference_features(ctx: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """PyTorch fp32 eager features on the parity sample (VALIDATION.PARITY.SAMPLE rows drawn from query and
    gallery, calibration hold-out excluded): the reference every artifact is compared with. Over the full set,
    with its Rank-1/mAP, when the set is no bigger than the sample or a reduced precision has no fp32 artifact
    of its target in the run."""
    from ..datasets import Market1501
    from ..export import reference_features as torch_features
    from ..preprocess import TensorCache
    from ..targets.parity import evaluate_features, sample_indices

    cfg = cfg_of(ctx)
    cache = TensorCache.open(data["cache_dir"])
    held_out = calibration.held_out_rows(cfg, Market1501(ctx["dataset_root"]), cache)
    indices = sample_indices(cache.num_query, len(cache) - cache.num_query, int(cfg.VALIDATION.PARITY.SAMPLE), held_out)
    out_dir = Path(ctx["run_dir"]) / "reference"
    out: dict[str, Any] = {"sample_size": len(indices), "held_out": len(held_out), "covers_dataset": False}
    if len(cache) <= int(cfg.VALIDATION.PARITY.SAMPLE) or _needs_full_reference(ctx):
        full = torch_features(cfg, cache, trust=ctx["trust_checkpoint"])
        out["metrics"] = evaluate_features(full, cache, cfg).percent()
        out["covers_dataset"] = True
        feats = full[indices]
    else:
        feats = torch_features(cfg, _Rows(cache, indices), trust=ctx["trust_checkpoint"])
    out["path"] = str(atomic_save_npy(out_dir / "pytorch_fp32.npy", feats))
    out["indices_path"] = str(atomic_save_npy(out_dir / "sample_indices.npy", indices))
    out["num_images"] = len(indices)
    return out
