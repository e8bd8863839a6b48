"""The verdict and the end of a run: which reference accuracy applies, the regression rules' verdict (alerts
stored), and the run's final status and disk use."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..retention import mark_finished
from ..utils import file_digest
from .context import cfg_of, store_of

#: md5 of the released market_resnet50_model_120_rank1_945.pth, whose published accuracy is the reference
RELEASED_CHECKPOINT_MD5 = "0811054928b8aa70b6ea64e71ef99aaf"


#: Rank-1 / mAP published for the released checkpoint with re-ranking (reid-strong-baseline, float16 re-ranking)
PUBLISHED_RERANK = {"rank1": 95.4, "mAP": 94.2}


def reference_applies(ctx: Mapping[str, Any]) -> bool:
    """The published Rank-1/mAP are a valid reference only for the released checkpoint evaluated as published
    (``TEST.NECK_FEAT after``, ``TEST.FEAT_NORM yes``), or when the run's params name reference values
    explicitly (another checkpoint, its own expected accuracy)."""
    if ctx.get("reference_explicit"):
        return True
    return _published_applies(ctx)


def _published_applies(ctx: Mapping[str, Any]) -> bool:
    cfg = cfg_of(ctx)
    if str(cfg.TEST.NECK_FEAT) != "after" or str(cfg.TEST.FEAT_NORM) != "yes":
        return False
    path = Path(ctx.get("checkpoint") or "")
    if not path.is_file():
        return False
    return file_digest(path, "md5") == RELEASED_CHECKPOINT_MD5


def check_regressions(ctx: Mapping[str, Any]) -> dict[str, Any]:
    """Evaluate the regression rules for the run, store its alerts (replacing earlier ones) and return the
    verdict; raising is left to the caller (the DAG fails the run after notifying)."""
    from ..results import RuleConfig

    use_reference = reference_applies(ctx)
    rules = RuleConfig.from_cfg(cfg_of(ctx), use_reference=use_reference)
    if use_reference and not ctx.get("reference_explicit") and _published_applies(ctx):
        rules = dataclasses.replace(
            rules, reference_rerank_rank1=PUBLISHED_RERANK["rank1"], reference_rerank_map=PUBLISHED_RERANK["mAP"]
        )
    verdict = store_of(ctx).evaluate_run(ctx["run_key"], rules)
    out = verdict.to_dict()
    out["summary"] = verdict.summary_lines()
    if not use_reference:
        out["summary"].append(
            "accuracy vs published reference: not applied (not the released checkpoint evaluated with "
            "TEST.NECK_FEAT after / TEST.FEAT_NORM yes, and no reference given)"
        )
    return out


def finish_run(ctx: Mapping[str, Any], status: str) -> str:
    """Mark the run finished: ``success`` (stored as ``regressed`` when it has open alerts) or ``failed``.
    Returns the stored status. The run directory gets ``finished.json`` (status, time, bytes under it), and
    the bytes are stored with the run (``reid-validate results`` shows them)."""
    store = store_of(ctx)
    stored = store.finish_run(ctx["run_key"], status)
    store.set_disk_usage(ctx["run_key"], mark_finished(ctx["run_dir"], stored))
    return stored
