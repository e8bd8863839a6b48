"""The ``reid-validate`` command.

Sub-commands come from the area modules, each exposing ``register(subparsers)``; a handler returns the exit
code. A ReidError is printed as ``error: ...`` with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Sequence

from .errors import ReidError

#: modules whose ``register(subparsers)`` adds sub-commands (imported lazily, only to build the parser)
AREA_MODULES = ("reid_tasks.targets.cli", "reid_tasks.results.cli", "reid_tasks.retention")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config-file", "--config_file", dest="config_file", default=None, help="yacs yml file")
    p.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides, e.g. TEST.NECK_FEAT \"('before')\"")


def _cmd_export(args: argparse.Namespace) -> int:
    from .config import load_config
    from .export import export_onnx

    opts = list(args.opts)
    if args.weights:
        opts += ["TEST.WEIGHT", args.weights]
    report = export_onnx(load_config(args.config_file, opts), args.output, trust=args.trust_checkpoint, force=True)
    print(json.dumps(report.to_dict(), indent=2))
    return 0


def _cmd_sample_data(args: argparse.Namespace) -> int:
    from .demo import ensure_demo_data

    d = ensure_demo_data(args.dir, num_ids=args.num_ids, seed=args.seed)
    print(f"dataset:    {d.dataset_root}\ncheckpoint: {d.checkpoint}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from . import pipeline

    params = {
        "config_file": args.config_file,
        "config_overrides": list(args.opts),
        "dataset_root": args.dataset_root,
        "checkpoint": args.weights,
        "targets": args.targets,
        "batch_sizes": args.batch_sizes,
        "precisions": args.precisions,
        "db_url": args.db,
        "notes": args.notes,
        "trust_checkpoint": args.trust_checkpoint,
        "skip_bad": args.skip_bad,
    }
    result = pipeline.run(params, run_key=args.run_key)
    if args.format == "json":
        print(
            json.dumps(
                {
                    "run_key": result.run_key,
                    "status": result.status,
                    "rows": result.rows,
                    "batch_invariant": result.batch_invariant,
                    "verdict": result.verdict,
                },
                indent=2,
            )
        )
    else:
        print(f"run {result.run_key}: {result.status}")
        print(pipeline.format_table(result.rows))
        print("accuracy independent of batch size: " + ("yes" if result.batch_invariant else "NO"))
        for line in result.verdict.get("summary", []):
            print(line)
        for alert in result.verdict.get("alerts", []):
            print(f"ALERT {alert.get('message', alert)}")
        for f in result.verdict.get("failures", []):
            print(f"FAILED {f['target']} bs{f['batch_size']} {f['precision']} at {f['stage']}: {f['message']}")
    return 1 if result.status != "success" else 0


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (core commands + every area's sub-commands)."""
    parser = argparse.ArgumentParser(
        prog="reid-validate",
        description="Validate offline inference of reid-strong-baseline (export, convert, benchmark, evaluate).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="the whole validation in-process: export, preprocess, infer, evaluate, record")
    _add_config_args(p)
    p.add_argument(
        "--dataset-root",
        default="",
        help="Market-1501 root (default DATASETS.ROOT_DIR; with no checkpoint either: the synthetic demo set)",
    )
    p.add_argument(
        "--weights",
        default="",
        help="checkpoint (.pth); default TEST.WEIGHT (the demo checkpoint only beside the demo dataset)",
    )
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="default VALIDATION.BATCH_SIZES (1 16)")
    p.add_argument("--targets", nargs="+", default=None, help="default VALIDATION.TARGETS (onnxruntime)")
    p.add_argument("--precisions", nargs="+", default=None, help="default VALIDATION.PRECISIONS (fp32)")
    p.add_argument("--db", default=None, help="results database URL")
    p.add_argument("--run-key", default=None, help="run key (default local/<time>-<id>)")
    p.add_argument("--notes", default="")
    p.add_argument("--trust-checkpoint", action="store_true", help="allow a pickled whole-model checkpoint")
    p.add_argument("--skip-bad", action="store_true", help="leave corrupt images out (counted and listed)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("export", help="checkpoint -> ONNX (opset 11) + parity check, like ReID_pth2onnx.py")
    _add_config_args(p)
    p.add_argument("--output", default="ReID.onnx", help="ONNX file to write (report beside it)")
    p.add_argument("--weights", default="", help="checkpoint (same as TEST.WEIGHT)")
    p.add_argument("--trust-checkpoint", action="store_true", help="allow a pickled whole-model checkpoint")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("sample-data", help="write the synthetic Market-1501 and the demo checkpoint")
    p.add_argument("dir")
    p.add_argument("--num-ids", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_sample_data)

    from .preprocess import add_preprocess_parser, cli_preprocess

    add_preprocess_parser(sub).set_defaults(func=cli_preprocess)
    for name in AREA_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``reid-validate`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except ReidError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
