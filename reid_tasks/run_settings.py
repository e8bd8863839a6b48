"""What a trigger may set: the base run settings and every registered target's declared ones, joined.

The trigger form's own params and config keys are listed here; a target adds its own by declaring them
(``Target.trigger_settings``, e.g. Ascend's SoC and device ids) and they join after the precisions.
:func:`trigger_spec` joins them on first use, once per registry state, so importing this module discovers no
target and imports nothing heavy. ``reid_tasks.settings`` enforces the result at the trust boundary.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import TargetError

if TYPE_CHECKING:
    from .targets import RunSetting, Target

BENCH_REPEATS_RANGE = (1, 100)
BATCH_SIZE_RANGE = (1, 256)

#: Config keys a trigger may set whatever targets are installed, and what each one is; the targets' own keys
#: join after VALIDATION.PRECISIONS (``settings.RUN_SETTABLE_KEYS``). Keys ending in "." allow the whole node: the
#: reid-strong-baseline nodes that describe the model (its yml files set them); none of them chooses a
#: binary, a file that is read, a database or a gate.
BASE_RUN_KEYS: dict[str, str] = {
    "VALIDATION.TARGETS": "inference targets to validate (registered names)",
    "VALIDATION.BATCH_SIZES": f"batch sizes, unique integers {BATCH_SIZE_RANGE[0]}..{BATCH_SIZE_RANGE[1]}",
    "VALIDATION.PRECISIONS": "precisions (fp32, fp16, bf16, int8)",
    "VALIDATION.REFERENCE.RANK1": "expected Rank-1 in percent, 0..100",
    "VALIDATION.REFERENCE.MAP": "expected mAP in percent, 0..100",
    "VALIDATION.BENCH.REPEATS": f"timed repetitions, {BENCH_REPEATS_RANGE[0]}..{BENCH_REPEATS_RANGE[1]}",
    "TEST.WEIGHT": "checkpoint (.pth), under VALIDATION.ALLOWED_ROOTS",
    "TEST.NECK_FEAT": "after | before",
    "TEST.FEAT_NORM": "yes | no",
    "TEST.RE_RANKING": "yes | no",
    "TEST.IMS_PER_BATCH": "reid-strong-baseline's test batch (not used for inference)",
    "DATASETS.ROOT_DIR": "Market-1501 root, under VALIDATION.ALLOWED_ROOTS",
    "DATASETS.NAMES": "market1501",
    "MODEL.": "the network (reid-strong-baseline MODEL node)",
    "INPUT.": "input size and normalisation (reid-strong-baseline INPUT node)",
    "DATALOADER.": "training only (reid-strong-baseline)",
    "SOLVER.": "training only (reid-strong-baseline)",
    "OUTPUT_DIR": "training only (reid-strong-baseline)",
}

#: The trigger form's own params; the targets' params join after "precisions" (``settings.TRIGGER_PARAMS``).
BASE_TRIGGER_PARAMS = (
    "checkpoint",
    "config_file",
    "config_overrides",
    "dataset_root",
    "targets",
    "batch_sizes",
    "precisions",
    "reference_rank1",
    "reference_map",
    "notes",
)
#: form params -> config keys (checkpoint / dataset_root are paths, handled apart); with the targets': FORM_KEYS
BASE_FORM_KEYS = {
    "targets": "VALIDATION.TARGETS",
    "batch_sizes": "VALIDATION.BATCH_SIZES",
    "precisions": "VALIDATION.PRECISIONS",
    "reference_rank1": "VALIDATION.REFERENCE.RANK1",
    "reference_map": "VALIDATION.REFERENCE.MAP",
}


class TriggerSpec(NamedTuple):
    """What a trigger may carry with the registered targets: the base settings above plus every target's
    declared run settings (the names in comments are ``reid_tasks.settings``'s)."""

    run_keys: dict[str, str]  # RUN_SETTABLE_KEYS: config key -> what it is
    params: tuple[str, ...]  # TRIGGER_PARAMS: the form's params, in form order
    form_keys: dict[str, str]  # FORM_KEYS: form param -> config key
    targets: tuple[tuple[str, RunSetting, type[Target]], ...]  # (config key, declaration, class) per target setting
    item_pattern: str  # one "KEY VALUE" override (an item of the JSON list form)
    lines_pattern: str  # "KEY VALUE" lines (the form's text): blank lines and "# comments" allowed
    key_pattern: str  # a key of the JSON object form

    def target_classes(self) -> list[type[Target]]:
        """The classes that declare run settings, each once, in declaration order."""
        return list(dict.fromkeys(cls for _, _, cls in self.targets))


def trigger_spec() -> TriggerSpec:
    """The :class:`TriggerSpec` of the targets registered now (built once per registry state)."""
    from .targets import target_class, target_names

    return _build_spec(tuple((name, target_class(name)) for name in target_names()))


@functools.lru_cache(maxsize=8)
def _build_spec(registry: tuple[tuple[str, Any], ...]) -> TriggerSpec:
    """The spec of ``registry`` ((name, class) of every registered target: the cache key)."""
    from .targets import run_setting_declarations

    declared = run_setting_declarations()
    for key, setting, cls in declared:
        if setting.param in BASE_TRIGGER_PARAMS or key in BASE_RUN_KEYS:
            raise TargetError(
                f"{cls.__name__} declares run setting {setting.param!r} ({key}): a setting of the DAG itself"
            )

    def joined(base: Iterable[tuple[str, Any]], anchor: str, extra: Iterable[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in base:
            out[k] = v
            if k == anchor:
                out.update(extra)
        return out

    run_keys = joined(BASE_RUN_KEYS.items(), "VALIDATION.PRECISIONS", ((k, s.summary) for k, s, _ in declared))
    params = joined(((p, p) for p in BASE_TRIGGER_PARAMS), "precisions", ((s.param, s.param) for _, s, _ in declared))
    form_keys = joined(BASE_FORM_KEYS.items(), "precisions", ((s.param, k) for k, s, _ in declared))
    run_key = "(?:" + "|".join(re.escape(k) + ("[A-Z0-9_.]+" if k.endswith(".") else "") for k in run_keys) + ")"
    return TriggerSpec(
        run_keys=run_keys,
        params=tuple(params),
        form_keys=form_keys,
        targets=tuple(declared),
        item_pattern=rf"^\s*{run_key}\s+\S.*$",
        lines_pattern=rf"^(?:[ \t]*(?:(?:{run_key}[ \t]+\S[^\r\n]*)|#[^\r\n]*)?[ \t]*(?:\r?\n|$))*$",
        key_pattern=rf"^{run_key}$",
    )
