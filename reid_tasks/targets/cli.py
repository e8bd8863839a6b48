"""``reid-validate targets | convert | benchmark`` sub-commands (wired by reid_tasks.cli)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from reid_tasks.errors import TargetError
from reid_tasks.targets import PRECISIONS, get_target, target_names
from reid_tasks.targets.records import MANIFEST_NAME, Artifact


def register(subparsers: Any) -> None:
    """Add the ``targets``, ``convert`` and ``benchmark`` sub-commands."""
    p = subparsers.add_parser("targets", help="list inference targets, their availability and precisions")
    _common(p)
    p.set_defaults(func=cmd_targets)

    p = subparsers.add_parser("convert", help="convert the ONNX model into a target artifact for one batch size")
    _common(p)
    p.add_argument("--target", required=True, help=f"one of {target_names()}")
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--precision", default="fp32", choices=PRECISIONS)
    p.add_argument("--calibration", metavar="CACHE", help="tensor cache whose first query images calibrate int8")
    p.add_argument("onnx", metavar="ONNX")
    p.add_argument("out", metavar="OUT", help="directory the artifact is written under")
    p.set_defaults(func=cmd_convert)

    p = subparsers.add_parser("benchmark", help="run an artifact on a tensor cache (or pure inference)")
    _common(p)
    p.add_argument("--target", required=True, help=f"one of {target_names()}")
    p.add_argument("artifact", metavar="ARTIFACT", help="artifact directory, its artifact.json or its model file")
    p.add_argument("--data", metavar="CACHE", help="tensor cache to run (required unless --pure)")
    p.add_argument("--pure", action="store_true", help="pure inference on random/zero input, no file I/O")
    p.add_argument("--pure-data", choices=("random", "zero"), default=None)
    p.add_argument("--batches", type=int, default=None, help="batches per repetition in --pure mode")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--out", metavar="DIR", help="write features.npy and perf.json here")
    p.set_defaults(func=cmd_benchmark)


def _common(p: argparse.ArgumentParser) -> None:
    # SUPPRESS: never overwrite a --config-file given to the main parser
    p.add_argument("--config-file", default=argparse.SUPPRESS, help="yacs config (yml)")
    p.add_argument("--format", choices=("table", "json"), default="table")


def _cfg(args: argparse.Namespace) -> Any:
    from reid_tasks.config import load_config

    return load_config(getattr(args, "config_file", None) or None, getattr(args, "opts", None) or ())


def _print(obj: dict[str, Any], fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(obj, indent=2, sort_keys=True, default=str))
        return
    width = max(len(k) for k in obj)
    for k, v in obj.items():
        if isinstance(v, dict | list):
            v = json.dumps(v, sort_keys=True, default=str)
        print(f"{k:<{width}}  {v}")


def cmd_targets(args: argparse.Namespace) -> int:
    cfg = _cfg(args)
    rows = [get_target(name, cfg).describe() for name in target_names()]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    header = ("target", "queue", "pool", "device", "available", "precisions", "reason")
    table = [
        (
            r["name"],
            r["queue"],
            r["pool"],
            r["device_kind"],
            "yes" if r["available"] else "no",
            ",".join(r["precisions"]) or "-",
            r["reason"],
        )
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *table, strict=False)]
    for row in (header, *table):
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    target = get_target(args.target, _cfg(args))
    calibration = None
    if args.calibration:
        from reid_tasks.preprocess import TensorCache

        calibration = TensorCache.open(args.calibration)
    art = target.convert(args.onnx, args.batch_size, args.precision, args.out, calibration=calibration)
    _print(art.to_dict(), args.format)
    return 0


def load_artifact(path: str | Path) -> Artifact:
    """An Artifact from its directory, its manifest or its main file (manifest beside it)."""
    p = Path(path)
    if p.is_file() and p.name != MANIFEST_NAME:
        p = p.parent
    if not (p / MANIFEST_NAME if p.is_dir() else p).is_file():
        raise TargetError(f"no artifact manifest at {path} (expected {MANIFEST_NAME} in the artifact directory)")
    return Artifact.load(p)


def cmd_benchmark(args: argparse.Namespace) -> int:
    target = get_target(args.target, _cfg(args))
    art = load_artifact(args.artifact)
    if args.pure:
        perf = target.benchmark_pure(
            art, batches=args.batches, repeats=args.repeats, data=args.pure_data, warmup=args.warmup
        )
        if args.out:
            from reid_tasks.utils import atomic_write_json

            Path(args.out).mkdir(parents=True, exist_ok=True)
            atomic_write_json(Path(args.out) / "perf.json", perf.to_dict())
    else:
        if not args.data:
            raise TargetError("benchmark: --data CACHE is required unless --pure is given")
        from reid_tasks.preprocess import TensorCache

        _, perf = target.run(art, TensorCache.open(args.data), args.out, warmup=args.warmup, repeats=args.repeats)
    _print(perf.to_dict(), args.format)
    return 0
