"""Run in a subprocess by test_docker_static.py with Airflow configured like the compose file
(CeleryExecutor): parses command lines with Airflow's and reid-validate's own argparse parsers and looks up
what the health checks rely on. Reads a JSON object on stdin, writes a JSON object of findings to the file it names."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import sys


def _parses(parser_factory, argv: list[str]) -> str | None:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser_factory().parse_args(argv)
    except SystemExit as exc:
        return f"exit {exc.code}: {err.getvalue().strip()[-400:]}"
    return None


def main() -> None:
    req = json.load(sys.stdin)
    from airflow.cli.cli_parser import get_parser

    from reid_tasks.cli import build_parser

    out: dict[str, object] = {"airflow": {}, "reid": {}, "objects": {}, "routes": [], "config": {}}
    for argv in req["airflow"]:
        out["airflow"][" ".join(argv)] = _parses(get_parser, argv)
    for argv in req["reid"]:
        out["reid"][" ".join(argv)] = _parses(build_parser, argv)
    for dotted in req["objects"]:
        module, _, attr = dotted.rpartition(".")
        try:
            getattr(importlib.import_module(module), attr)
            out["objects"][dotted] = None
        except Exception as exc:
            out["objects"][dotted] = repr(exc)
    from airflow.api_fastapi.core_api.routes.public import public_router

    # Route paths carry the router's /api/v2 prefix in some Airflow builds and not in others.
    paths = (getattr(r, "path", "") for r in public_router.routes)
    out["routes"] = sorted({p if p.startswith("/api/v2") else "/api/v2" + p for p in paths})
    from airflow.configuration import conf

    out["config"]["scheduler_health_check_server_port"] = conf.get("scheduler", "scheduler_health_check_server_port")
    out["config"]["api_port"] = conf.get("api", "port")
    from airflow import __version__

    out["airflow_version"] = __version__
    import reid_tasks.targets as targets

    out["target_queues"] = {n: targets.get_target(n).queue for n in targets.target_names()}
    sys.path.insert(0, req["dags_folder"])
    import reid_validation

    out["benchmark_pools"] = {n: reid_validation.benchmark_pool(n) for n in targets.target_names()}
    with open(req["out"], "w", encoding="utf-8") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
