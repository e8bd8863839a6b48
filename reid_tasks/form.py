"""The trigger form: one plain spec per param (``Param(**spec)`` in the DAG), built from the deployment config.

    >>> form = trigger_form(load_config())
    >>> form["batch_sizes"]["default"], form["batch_sizes"]["items"]
    ([1, 16], {'type': 'integer', 'minimum': 1, 'maximum': 256})

Each spec holds ``default``, ``title``, ``description`` and JSON-schema keywords. The form's own params are
written here; a target's come from its declaration (``Target.trigger_settings`` and ``trigger_fields``), in the
order of ``settings.TRIGGER_PARAMS``. Where empty means "use the deployment's value" the type is nullable, so
the form can be submitted with its defaults. Bounds of numbers sit in ``allOf``: Airflow's number field clamps
to a top-level minimum/maximum without a word (150 became 100); nested, they only validate, so a bad value is
refused. No Airflow import here, nothing heavy: the DAG builds its params from this while it is parsed.
"""

from __future__ import annotations

from typing import Any

from .errors import TargetError
from .run_settings import BATCH_SIZE_RANGE, TriggerSpec, trigger_spec
from .settings import allow_list_text
from .targets import PRECISIONS, target_names

_ROOTS = "VALIDATION.ALLOWED_ROOTS of the deployment (default: its data dir)"
_EMPTY_DEMO = "if the deployment allows demo runs (VALIDATION.DEMO), else the run fails."


def trigger_form(cfg: Any) -> dict[str, dict[str, Any]]:
    """{param: spec} of the trigger form, in form order, with defaults and bounds from ``cfg``."""
    spec = trigger_spec()
    form = _base_form(cfg, spec)
    for cls in spec.target_classes():
        declared = [s for _, s, c in spec.targets if c is cls]
        fields = cls.trigger_fields(cfg)
        names = {s.param for s in declared}
        if set(fields) != names:
            raise TargetError(
                f"{cls.__name__}.trigger_fields gives {sorted(fields)}, not its declared run settings {sorted(names)}"
            )
        form.update({s.param: {**fields[s.param], "title": s.title} for s in declared})
    return {name: form[name] for name in spec.params}


def _base_form(cfg: Any, spec: TriggerSpec) -> dict[str, dict[str, Any]]:
    v, targets = cfg.VALIDATION, target_names()
    lo, hi = BATCH_SIZE_RANGE
    return {
        "checkpoint": _nullable(
            "string",
            "Checkpoint",
            f"Path of the reid-strong-baseline .pth checkpoint on the workers, under the allowed roots ({_ROOTS}). "
            f"Empty: the deployment's checkpoint (TEST.WEIGHT); when it names none, the demo checkpoint {_EMPTY_DEMO}",
        ),
        "config_file": _nullable(
            "string",
            "Config file",
            "A reid-strong-baseline / reid-validate yml on the workers, under the allowed roots, merged over "
            "the deployment configuration; it may set run settings only (see Config overrides). Empty: none.",
        ),
        "config_overrides": {
            "default": None,
            "type": ["null", "string", "array", "object"],
            "maxLength": 5000,
            "pattern": spec.lines_pattern,
            "items": {"type": "string", "pattern": spec.item_pattern},
            "propertyNames": {"pattern": spec.key_pattern},
            "title": "Config overrides",
            "description": (
                'One KEY VALUE per line, e.g. TEST.NECK_FEAT before (also a JSON list of "KEY VALUE" strings or '
                f'an object {{"KEY": value}}). Run settings only: {allow_list_text()}. Anything else (tools, paths, '
                "database, rule and parity thresholds) belongs to the deployment configuration. Empty: none."
            ),
        },
        "dataset_root": _nullable(
            "string",
            "Dataset root",
            "Market-1501 directory (query/, bounding_box_test/) on the workers, under the allowed roots. "
            "Empty: the deployment's dataset (DATASETS.ROOT_DIR); when it names none, the synthetic demo set "
            + _EMPTY_DEMO,
        ),
        "targets": _array(
            list(v.TARGETS),
            {"type": "string", "enum": targets},
            "Targets",
            f"Inference targets to validate, one per line; registered: {', '.join(targets)}.",
        ),
        "batch_sizes": _array(
            list(v.BATCH_SIZES),
            {"type": "integer", "minimum": lo, "maximum": hi},
            "Batch sizes",
            f"One artifact is built and benchmarked per batch size ({lo}..{hi}).",
        ),
        "precisions": _array(
            list(v.PRECISIONS),
            {"type": "string", "enum": list(PRECISIONS)},
            "Precisions",
            f"One of {', '.join(PRECISIONS)} per line; ones a target cannot do are not scheduled for it.",
        ),
        "reference_rank1": _percent(
            "Reference Rank-1 (%)",
            f"Expected Rank-1 of this checkpoint, 0..100; a run more than {v.RULES.REF_ACC_TOLERANCE} pt below it "
            f"fails. Empty: the published {v.REFERENCE.RANK1}, applied only to the released checkpoint.",
        ),
        "reference_map": _percent(
            "Reference mAP (%)",
            f"Expected mAP of this checkpoint, 0..100. Empty: the published {v.REFERENCE.MAP}, applied only to "
            "the released checkpoint.",
        ),
        "notes": _nullable(
            "string", "Notes", "Free text stored with the run (up to 2000 characters). Empty: none.", maxLength=2000
        ),
    }


def _nullable(kind: str, title: str, description: str, **schema: Any) -> dict[str, Any]:
    return {"default": None, "type": ["null", kind], **schema, "title": title, "description": description}


def _array(default: list[Any], items: dict[str, Any], title: str, description: str) -> dict[str, Any]:
    return {
        "default": default,
        "type": "array",
        "items": items,
        "uniqueItems": True,
        "minItems": 1,
        "title": title,
        "description": description,
    }


def _percent(title: str, description: str) -> dict[str, Any]:
    return _nullable("number", title, description, allOf=[{"minimum": 0, "maximum": 100}])
