"""``reid-validate results | alerts | history | check | db`` sub-commands.

``register(subparsers)`` adds them; every handler takes the parsed args and returns an exit code.
ResultsError (a ReidError) propagates to reid_tasks.cli.main, which prints it.
Handlers read the config from ``args.cfg`` (a loaded config) or ``args.config_file`` / ``args.opts`` when
the main parser provides them, else the defaults.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from .records import as_utc
from .rule_config import METRICS

FORMATS = ("table", "csv", "json")
_REL = re.compile(r"^(\d+(?:\.\d+)?)([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, option: str = "--since") -> datetime:
    """'7d', '12h', '30m', '2w' (ago) or an ISO date / datetime (UTC when no offset)."""
    m = _REL.match(text.strip())
    if m:
        return datetime.now(UTC) - timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})
    try:
        return as_utc(datetime.fromisoformat(text.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{option}: expected e.g. 7d, 12h, 2025-01-31 or 2025-01-31T02:00, got {text!r}"
        ) from None


def parse_until(text: str) -> datetime:
    """As parse_since; a bare date (2025-01-31) means up to the end of that day."""
    moment = parse_since(text, "--until")
    if len(text.strip()) == 10 and not _REL.match(text.strip()):
        moment += timedelta(days=1, microseconds=-1)
    return moment


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_db(p: argparse.ArgumentParser, suppress: bool = False) -> None:
    p.add_argument(
        "--db",
        default=argparse.SUPPRESS if suppress else None,
        metavar="URL",
        help="results database URL (default: VALIDATION.RESULTS_DB_URL, $REID_RESULTS_DB_URL, the Airflow "
        "connection reid_results_db inside Airflow, else SQLite in the data directory)",
    )


def _add_format(p: argparse.ArgumentParser, default: str = "table") -> None:
    p.add_argument("--format", choices=FORMATS, default=default, help=f"output format (default {default})")


def register(subparsers: Any) -> None:
    """Add the results sub-commands to the ``reid-validate`` parser."""
    p = subparsers.add_parser("results", help="perf and accuracy per run and series, newest first")
    _add_db(p)
    p.add_argument("--target")
    p.add_argument("--batch-size", type=_positive_int)
    p.add_argument("--precision")
    p.add_argument("--device-kind", help="only rows measured on this device kind (cpu, cuda, ascend310, ...)")
    p.add_argument("--since", type=parse_since, help="7d, 12h, or an ISO date")
    p.add_argument("--until", type=parse_until, help="runs started up to then: 1d, or an ISO date (inclusive)")
    p.add_argument("--run", help="one run key")
    p.add_argument("--limit", type=_positive_int, default=50)
    _add_format(p)
    p.set_defaults(func=cmd_results)

    p = subparsers.add_parser("alerts", help="regression alerts; `alerts ack ID` acknowledges one")
    _add_db(p)
    p.add_argument("--open", action="store_true", help="only alerts not acknowledged")
    p.add_argument("--since", type=parse_since, help="7d, 12h, or an ISO date")
    p.add_argument("--run", help="alerts of one run key")
    p.add_argument("--limit", type=_positive_int, default=100)
    _add_format(p)
    p.set_defaults(func=cmd_alerts)
    sub = p.add_subparsers(dest="alerts_command", metavar="{ack}")
    ack = sub.add_parser("ack", help="acknowledge an alert (accepts the new level as the baseline)")
    ack.add_argument("id", type=_positive_int)
    ack.add_argument("--by", help="who acknowledges (default $USER)")
    _add_db(ack, suppress=True)
    ack.set_defaults(func=cmd_ack)

    p = subparsers.add_parser("history", help="one metric of one series over time; --plot writes a PNG trend")
    _add_db(p)
    p.add_argument("--metric", required=True, choices=sorted(METRICS))
    p.add_argument("--target", required=True)
    p.add_argument("--batch-size", type=_positive_int, required=True)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--device-kind", help="perf metrics: device kind (default: the only one recorded)")
    p.add_argument("--mode", choices=("real", "pure"), default="real", help="perf metrics: benchmark mode")
    p.add_argument("--re-ranking", action="store_true", help="accuracy metrics: the re-ranked series")
    p.add_argument("--limit", type=_positive_int, default=100)
    p.add_argument("--plot", metavar="PNG", help="write a trend chart with the baseline and alert band")
    _add_format(p)
    p.set_defaults(func=cmd_history)

    p = subparsers.add_parser(
        "check", help="exit 1 when a run has open alerts or failed artifacts (for CI); json: verdicts + baselines"
    )
    _add_db(p)
    p.add_argument("--run", required=True, help="run key")
    _add_format(p)
    p.set_defaults(func=cmd_check)

    p = subparsers.add_parser("db", help="results database migrations (Alembic)")
    dbsub = p.add_subparsers(dest="db_command", required=True, metavar="{upgrade,downgrade,current}")
    up = dbsub.add_parser("upgrade", help="migrate to a revision (default: head)")
    up.add_argument("revision", nargs="?", default="head")
    down = dbsub.add_parser("downgrade", help="migrate down to a revision ('base' drops every table)")
    down.add_argument("revision")
    cur = dbsub.add_parser("current", help="print the database's revision")
    for q in (up, down, cur):
        _add_db(q)
        q.set_defaults(func=cmd_db)


# ---------------------------------------------------------------------- helpers
def _config(args: argparse.Namespace) -> Any:
    cfg = getattr(args, "cfg", None)
    if cfg is not None:
        return cfg
    from ..config import load_config

    return load_config(getattr(args, "config_file", None), getattr(args, "opts", None) or ())


def _open(args: argparse.Namespace) -> Any:
    from .store import ResultsStore

    return ResultsStore.open(getattr(args, "db", None), cfg=_config(args))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def emit(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str, out: Any = None) -> None:
    """Print rows as an aligned table, CSV or JSON (JSON keeps every field)."""
    out = out or sys.stdout
    if fmt == "json":
        json.dump(list(rows), out, indent=2, default=str)
        out.write("\n")
        return
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for r in rows:
            writer.writerow(["" if r.get(c) is None else r.get(c) for c in columns])
        return
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    out.write("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip() + "\n")
    for row in cells:
        out.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n")


RESULT_COLUMNS = (
    "run_key",
    "status",
    "run_kind",
    "started_at",
    "target",
    "device_kind",
    "batch_size",
    "precision",
    "device",
    "throughput_best",
    "throughput_median",
    "latency_p99_ms",
    "card_throughput",
    "pure_throughput",
    "rank1",
    "rank5",
    "rank10",
    "mAP",
    "mINP",
    "flagged",
    "parity_passed",
    "simulated",
    "open_alerts",
    "failed_stage",
    "failure_message",
    "run_disk_bytes",
)
ALERT_COLUMNS = (
    "id",
    "run_key",
    "rule",
    "metric",
    "series_key",
    "observed",
    "baseline",
    "threshold",
    "z",
    "change_run",
    "created_at",
    "acknowledged_at",
    "message",
)


# ---------------------------------------------------------------------- handlers
def cmd_results(args: argparse.Namespace) -> int:
    from .reads import read_results

    with _open(args) as store:
        rows = read_results(store, args, run_key=args.run)
    if not rows and args.format == "table":
        print("no results")
        return 0
    emit([r.to_dict() if args.format == "json" else vars(r) for r in rows], RESULT_COLUMNS, args.format)
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    with _open(args) as store:
        alerts = store.alerts(open_only=args.open, since=args.since, run_key=args.run, limit=args.limit)
    if not alerts and args.format == "table":
        print("no open alerts" if args.open else "no alerts")
        return 0
    emit([a.to_dict() if args.format == "json" else vars(a) for a in alerts], ALERT_COLUMNS, args.format)
    return 0


def cmd_ack(args: argparse.Namespace) -> int:
    import getpass

    by = args.by
    if by is None:
        try:
            by = getpass.getuser()
        except Exception:  # no user name in this environment
            by = None
    with _open(args) as store:
        alert = store.ack(args.id, by=by)
        status = store.get_run(alert.run_key).status
    print(f"alert {alert.id} acknowledged ({alert.series_key} {alert.metric}); run {alert.run_key} is {status}")
    if alert.change_run is not None:
        print(
            f"new baseline accepted: {alert.series_key} {alert.metric} is judged only against runs from "
            f"{alert.change_run} on"
        )
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from .reads import read_series
    from .rule_config import RuleConfig

    cfg = _config(args)
    with _open(args) as store:
        series = read_series(store, args, re_ranking=args.re_ranking, rule_config=RuleConfig.from_cfg(cfg))
    if args.plot:
        from .plot import plot_series

        path = plot_series(series, args.plot)
        print(f"wrote {path}", file=sys.stderr)
    if args.format == "json":
        json.dump(series.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if args.format == "table":
        lo, hi = series.band
        print(
            f"{series.series_key} {series.metric} ({series.unit}): {len(series.points)} point(s); "
            f"baseline {_cell(series.baseline)} ({series.method}), threshold {_cell(series.threshold)}, "
            f"band [{_cell(lo)}, {_cell(hi)}]"
        )
        for c in series.change_points:
            p = "" if c.p_value is None else f", p {c.p_value:.2g}"
            rel = "" if c.rel_change is None else f" ({c.rel_change * 100:+.1f} %{p})"
            state = "accepted" if c.accepted else "open"
            print(
                f"change point at {c.run_key}: {_cell(c.level_before)} -> {_cell(c.level_after)}{rel}, "
                f"{state}, alert(s) {', '.join(map(str, c.alert_ids))}"
            )
        for b in series.baselines:
            by = f" by {b.accepted_by}" if b.accepted_by else ""
            print(f"baseline restarted at {b.run_key} (accepted {_cell(b.accepted_at)}{by}, alert {_cell(b.alert_id)})")
    emit([vars(p) for p in series.points], ("run_key", "started_at", "value", "status", "good"), args.format)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    with _open(args) as store:
        run = store.get_run(args.run)
        alerts = store.alerts(open_only=True, run_key=args.run)
        failures = store.failures(args.run)
        verdicts = store.verdicts(args.run)
    if args.format == "json":
        out = {
            "run": run.to_dict(),
            "open_alerts": [a.to_dict() for a in alerts],
            "failures": [f.to_dict() for f in failures],
            "verdicts": [v.to_dict() for v in verdicts],  # each with the run keys of its baseline
        }
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for a in alerts:
            print(f"ALERT {a.id} [{a.rule}] {a.message}")
        for f in failures:
            print(f"FAILED {f.target}/bs{f.batch_size}/{f.precision} at {f.stage}: {f.message}")
        kind = f" ({run.kind} run)" if run.kind else ""
        print(f"run {run.run_key}{kind}: status {run.status}, {len(alerts)} open alert(s), {len(failures)} failure(s)")
    return 1 if alerts or failures else 0


def cmd_db(args: argparse.Namespace) -> int:
    from alembic.util import CommandError
    from sqlalchemy.exc import DBAPIError

    from ..errors import ResultsError
    from . import migrate
    from .store import make_engine
    from .urls import redact, resolve_url

    url = resolve_url(getattr(args, "db", None), _config(args))
    engine = make_engine(url)
    try:
        if args.db_command == "upgrade":
            rev = migrate.upgrade(engine, args.revision)
        elif args.db_command == "downgrade":
            rev = migrate.downgrade(engine, args.revision)
        else:
            rev = migrate.current(engine)
    except CommandError as exc:
        raise ResultsError(f"db {args.db_command} {getattr(args, 'revision', '')}: {exc}") from exc
    except DBAPIError as exc:
        raise ResultsError(f"db {args.db_command} on {redact(url)} failed: {exc.orig}") from exc
    finally:
        engine.dispose()
    head = migrate.head_revision()
    state = "head" if rev == head else f"head is {head}"
    print(f"{redact(url)}: revision {rev or 'none (no schema)'} ({state})")
    return 0
