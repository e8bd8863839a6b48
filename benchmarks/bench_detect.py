"""Regression detectors compared on synthetic nightly series with a known truth (issue 12).

    flock /tmp/reid-heavy.lock .venv/bin/python benchmarks/bench_detect.py [--series 2000] [--seed 0]

Generator (fixed seed): lengths 30-200 runs; noise models from the product's own measurements -- normal
(CV 1-15 %: 40 % of series in 1-2 %, the rest log-uniform 2-15 %), bimodal good/bad nights (bad with
p 5-25 %, 10-30 % slower), occasional 30 % outliers (1-5 % of nights, 80 % of them slow), slow drift
(0.01-0.05 %/run either way); truths: no change (40 %), a persistent drop of 3-30 % at a known run (40 %),
a drop that recovers after 5-20 runs (20 %). Drop sizes: half 3-10 %, half 10-30 %.

Online, as the nightly check runs: each detector sees the series one run at a time, and an alert fires at the
run being evaluated. An alert is acknowledged at once by a simulated user, with the product's meaning of
acknowledging for that detector (today's rule: the run counts as good; change-point detectors: the baseline
restarts at the named change run).

Measured per detector:
- R10@3: recall of drops >= 10 % alerted within 3 runs (at the change run or one of the next two), noise CV <=
  2 % (every noise model; the base CV of a bimodal series is its within-mode CV, its bad nights come on top).
  Also without the bimodal series, and over all CVs.
- R5@5: recall of 5-10 % drops within 5 runs, CV <= 2 %.
- FA/100: alerts per 100 runs on series with no change, all noise models together and per noise model; the
  goal (<= 1) must hold for every noise model.
- delay: median runs from the change to the alert, detected drops >= 10 %; exact: the share of drops >= 10 %
  detected within 3 runs whose alert names exactly the change run.
- ms/series: detector time per series (all its online checks).
An alert counts as true when it fires within 10 runs after a drop; any other alert is false.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import platform
import random
import statistics
import sys
import time
from collections.abc import Sequence

from reid_tasks.results.detect import DEFAULT, RupturesPelt, WindowedWelch, ZScoreRule

NOISE_MODELS = ("normal", "bimodal", "outliers", "drift")
TRUE_WINDOW = 10
GOAL = {"r10": 0.95, "r5": 0.80, "fa": 1.0, "exact": 0.90}


@dataclasses.dataclass(frozen=True)
class Truth:
    values: tuple[float, ...]
    noise: str
    cv: float
    change: int | None  # run index of the drop
    drop: float  # fraction, 0 when no change
    recovery: int | None  # run index where the level returns


def generate(rng: random.Random) -> Truth:
    n = rng.randint(30, 200)
    noise = rng.choices(NOISE_MODELS, weights=(40, 20, 20, 20))[0]
    cv = rng.uniform(0.01, 0.02) if rng.random() < 0.4 else math.exp(rng.uniform(math.log(0.02), math.log(0.15)))
    kind = rng.choices(("none", "step", "recovery"), weights=(40, 40, 20))[0]
    level = 10 ** rng.uniform(1, 3)
    mult = [1.0] * n
    change = recovery = None
    drop = 0.0
    if kind != "none":
        drop = rng.uniform(0.03, 0.10) if rng.random() < 0.5 else rng.uniform(0.10, 0.30)
        change = rng.randint(15, n - 8)
        for i in range(change, n):
            mult[i] = 1 - drop
        if kind == "recovery" and change + 5 < n:
            recovery = min(n - 1, change + rng.randint(5, 20))
            for i in range(recovery, n):
                mult[i] = 1.0
    p_bad, d_bad = rng.uniform(0.05, 0.25), rng.uniform(0.10, 0.30)
    q_out = rng.uniform(0.01, 0.05)
    drift = rng.uniform(0.0001, 0.0005) * rng.choice((-1, 1))
    values = []
    for i in range(n):
        v = level * mult[i] * (1 + cv * rng.gauss(0, 1))
        if noise == "bimodal" and rng.random() < p_bad:
            v *= 1 - d_bad
        elif noise == "outliers" and rng.random() < q_out:
            v *= 0.7 if rng.random() < 0.8 else 1.3
        elif noise == "drift":
            v *= 1 + drift * i
        values.append(max(v, 1e-6))
    return Truth(tuple(values), noise, cv, change, drop, recovery)


@dataclasses.dataclass
class Outcome:
    first_true: int | None = None  # run of the first alert within TRUE_WINDOW after the drop
    named: int | None = None  # change run that alert named
    false_alerts: int = 0


def simulate(detector, truth: Truth) -> Outcome:
    """Run the detector online over the series; a simulated user acknowledges every alert at once."""
    restarts = not isinstance(detector, ZScoreRule)  # today's ack only makes the run count as good
    out = Outcome()
    start = 0
    values = truth.values
    for t in range(1, len(values)):
        change = detector.check(values[: t + 1], higher_is_better=True, start=start)
        if change is None:
            continue
        if truth.change is not None and truth.change <= t <= truth.change + TRUE_WINDOW:
            if out.first_true is None:
                out.first_true, out.named = t, change.index
        else:
            out.false_alerts += 1
        if restarts:
            start = change.index
    return out


def _rate(hits: int, total: int) -> str:
    return f"{hits / total * 100:5.1f} %" if total else "  n/a"


def evaluate(detector, series: Sequence[Truth]) -> dict:
    t0 = time.perf_counter()
    outcomes = [simulate(detector, s) for s in series]
    elapsed = time.perf_counter() - t0
    r10 = r10_all = r10_uni = r5 = exact = n_exact = 0
    n10 = n10_all = n10_uni = n5 = 0
    delays = []
    fa_runs = dict.fromkeys(NOISE_MODELS, 0)
    fa_alerts = dict.fromkeys(NOISE_MODELS, 0)
    for s, o in zip(series, outcomes, strict=True):
        if s.change is None:
            fa_runs[s.noise] += len(s.values)
            fa_alerts[s.noise] += o.false_alerts
            continue
        delay = None if o.first_true is None else o.first_true - s.change
        if s.drop >= 0.10:
            n10_all += 1
            hit3 = delay is not None and delay <= 2
            r10_all += hit3
            if delay is not None:
                delays.append(delay)
            if hit3:
                n_exact += 1
                exact += o.named == s.change
            if s.cv <= 0.02:
                n10 += 1
                r10 += hit3
                if s.noise != "bimodal":
                    n10_uni += 1
                    r10_uni += hit3
        elif s.drop >= 0.05 and s.cv <= 0.02:
            n5 += 1
            r5 += delay is not None and delay <= 4
    fa_total = sum(fa_alerts.values()) / max(1, sum(fa_runs.values())) * 100
    fa_by = {m: fa_alerts[m] / max(1, fa_runs[m]) * 100 for m in NOISE_MODELS}
    res = {
        "name": detector.name,
        "r10": r10 / max(1, n10),
        "r10_all": r10_all / max(1, n10_all),
        "r10_uni": r10_uni / max(1, n10_uni),
        "r5": r5 / max(1, n5),
        "fa": fa_total,
        "fa_by": fa_by,
        "delay": statistics.median(delays) if delays else math.nan,
        "exact": exact / max(1, n_exact),
        "ms": elapsed / len(series) * 1000,
        "counts": (n10, n10_all, n5, sum(fa_runs.values())),
    }
    res["fa_worst"] = max(fa_by.values())
    res["pass"] = _goals_met(res) == len(GOAL)
    return res


def cpu_line() -> str:
    model, flags = platform.processor() or "?", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("?", "", "x86_64"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "amx_tile") if f in flags]
    return f"{model}; ISA: {' '.join(isa) or 'n/a'}; Python {platform.python_version()}"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--series", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    ap.add_argument("--only", metavar="NAME", help="only the detectors whose name contains NAME (other seeds)")
    args = ap.parse_args(argv)
    if args.series < 100:
        ap.error("--series must be >= 100")
    rng = random.Random(args.seed)
    series = [generate(rng) for _ in range(args.series)]
    detectors = [
        ZScoreRule(),
        WindowedWelch(k=3, name="welch(k=3)"),
        WindowedWelch(k=5, name="welch(k=5)"),
        RupturesPelt(),
        # The default without one of its parts, to show what each part is for.
        dataclasses.replace(DEFAULT, alpha=1.0, name="robust, no rank test"),
        dataclasses.replace(DEFAULT, drop_worst=False, name="robust, worst run kept"),
        DEFAULT,
    ]
    if args.only:
        detectors = [d for d in detectors if args.only in d.name]
        if not detectors:
            ap.error(f"--only {args.only!r} matches no detector")
    results = [evaluate(d, series) for d in detectors]
    n10, n10_all, n5, fa_runs = results[0]["counts"]
    print(f"CPU: {cpu_line()}")
    print(
        f"{len(series)} series (seed {args.seed}), {sum(len(s.values) for s in series)} runs; "
        f"{n10} drops >= 10 % at CV <= 2 % ({n10_all} at any CV), {n5} drops 5-10 % at CV <= 2 %, "
        f"{fa_runs} runs without change"
    )
    head = ["detector", "R10@3 CV<=2%", "R10@3 CV<=2% not bimodal", "R10@3 all CV", "R5@5 CV<=2%", "FA/100"]
    head += [f"FA {m}" for m in NOISE_MODELS]
    head += ["delay", "exact", "ms/series", "goal"]
    rows = []
    for r in results:
        rows.append(
            [
                r["name"],
                _pct(r["r10"]),
                _pct(r["r10_uni"]),
                _pct(r["r10_all"]),
                _pct(r["r5"]),
                f"{r['fa']:.2f}",
                *(f"{r['fa_by'][m]:.2f}" for m in NOISE_MODELS),
                f"{r['delay']:g}",
                _pct(r["exact"]),
                f"{r['ms']:.1f}",
                "met" if r["pass"] else "missed",
            ]
        )
    goal = ["goal", ">= 95 %", "", "", ">= 80 %", "", *(["<= 1"] * len(NOISE_MODELS)), "", ">= 90 %", "", ""]
    _table(head, [*rows, goal], markdown=args.markdown)
    best = max(results, key=_rank)
    print(f"best by this benchmark: {best['name']} (product default: {DEFAULT.name})")
    return 0 if best["name"] == DEFAULT.name or args.only else 1


def _pct(x: float) -> str:
    return f"{x * 100:.1f} %"


def _rank(r: dict) -> tuple:
    """Goal met first, then the number of goals met, then recall at CV <= 2 %, then fewer false alerts."""
    return (r["pass"], _goals_met(r), r["r10"] + r["r5"], -r["fa_worst"])


def _goals_met(r: dict) -> int:
    checks = (r["r10"] >= GOAL["r10"], r["r5"] >= GOAL["r5"], r["fa_worst"] <= GOAL["fa"], r["exact"] >= GOAL["exact"])
    return sum(checks)


def _table(head: list[str], rows: list[list[str]], *, markdown: bool) -> None:
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join("---" for _ in head) + "|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    for row in (head, *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    sys.exit(main())
