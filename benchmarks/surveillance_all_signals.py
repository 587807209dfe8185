"""Benchmark: all aberration-detection methods on every series of a region, and the R ratio.

Simulates weekly counts for AREAS × DISEASES series over YEARS (seasonal Poisson, a few injected
outbreaks), runs every registered method on all of them and prints seconds per method. With
``--r-series N`` (R with the surveillance package on PATH) the first N series are also run by R's
``earsC``/``farringtonFlexible``/``cusum`` and by RHIP in the same process run, and the ratio
R time / RHIP time is reported per method.

    .venv/bin/python benchmarks/surveillance_all_signals.py                  # 50 × 40 × 10 years
    .venv/bin/python benchmarks/surveillance_all_signals.py --r-series 20
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from rhip.surveillance import detect

R_METHODS = {
    "ears_c1": 'earsC(s, control = list(method = "C1", range = RANGE))',
    "ears_c2": 'earsC(s, control = list(method = "C2", range = RANGE))',
    "ears_c3": 'earsC(s, control = list(method = "C3", range = RANGE))',
    "farrington": "farringtonFlexible(s, control = list(b = 5, w = 3, noPeriods = 1, weightsThreshold = 1, "
    "pastWeeksNotIncluded = 3, thresholdMethod = 'delta', glmWarnings = FALSE, range = RANGE))",
    "noufaily": "farringtonFlexible(s, control = list(b = 5, w = 3, noPeriods = 10, weightsThreshold = 2.58, "
    "pastWeeksNotIncluded = 26, thresholdMethod = 'nbPlugin', glmWarnings = FALSE, range = RANGE))",
    "cusum_rossi": 'cusum(s, control = list(range = 105:nrow(s), trans = "rossi"))',
}


def simulate(areas: int, diseases: int, years: int, seed: int) -> tuple[np.ndarray, list[dt.date]]:
    """Seasonal Poisson weekly counts (T × series) with a few outbreaks, and the Monday of each week."""
    rng = np.random.default_rng(seed)
    weeks = 52 * years + 1
    first = dt.date(2016, 1, 4)
    dates = [first + dt.timedelta(weeks=i) for i in range(weeks)]
    n = areas * diseases
    level = rng.gamma(1.5, 2.0, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    t = np.arange(weeks)[:, None]
    mu = level * np.exp(0.6 * np.sin(2 * np.pi * t / 52.18 + phase))
    counts = rng.poisson(mu).astype(np.float64)
    for s in rng.choice(n, n // 10, replace=False):
        start = rng.integers(52 * 5, weeks - 4)
        counts[start : start + 3, s] += rng.poisson(3 * level[s] + 3, 3)
    return counts, dates


def _first(counts: np.ndarray, last: int) -> int:
    """First evaluated row: the latest ``last`` weeks, or every week with 5 years of baseline."""
    return len(counts) - last if last else 52 * 5 + 3 + 2


def run_rhip(counts: np.ndarray, dates: list[dt.date], methods: list[str], last: int) -> dict[str, float]:
    """Seconds per method on all series."""
    out = {}
    first = _first(counts, last)
    for m in methods:
        t0 = time.perf_counter()
        tps = range(105, len(counts)) if m == "cusum_rossi" else range(first, len(counts))
        detect(m, counts, dates=dates, timepoints=tps)
        out[m] = time.perf_counter() - t0
    return out


def run_r(counts: np.ndarray, dates: list[dt.date], methods: list[str], last: int) -> dict[str, float]:
    """Seconds per method in R (timed inside R, start-up excluded)."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "counts.csv"
        np.savetxt(data, counts, delimiter=",", fmt="%d")
        lines = [
            "suppressMessages(library(surveillance))",
            f"m <- as.matrix(read.csv('{data}', header = FALSE))",
            f"s <- sts(observed = m, epoch = as.Date('{dates[0].isoformat()}') + 7 * (0:(nrow(m) - 1)), "
            "epochAsDate = TRUE, frequency = 52)",
            f"RANGE <- {_first(counts, last) + 1}:nrow(m)",
        ]
        for name in methods:
            lines.append(
                f"t0 <- proc.time()[['elapsed']]; invisible(suppressWarnings({R_METHODS[name]})); "
                f"cat('{name}', proc.time()[['elapsed']] - t0, '\\n')"
            )
        script = Path(tmp) / "bench.R"
        script.write_text("\n".join(lines) + "\n", encoding="utf-8")
        res = subprocess.run(["Rscript", str(script)], capture_output=True, text=True)
        if res.returncode:
            raise SystemExit(f"R failed: {res.stderr[-800:]}")
    parts = [line.split() for line in res.stdout.splitlines()]
    return {p[0]: float(p[1]) for p in parts if len(p) == 2 and p[0] in R_METHODS}


def main() -> None:
    """Parse arguments, run and print the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--areas", type=int, default=50)
    ap.add_argument("--diseases", type=int, default=40)
    ap.add_argument("--years", type=int, default=10)
    ap.add_argument("--methods", default=",".join(R_METHODS))
    ap.add_argument("--r-series", type=int, default=0, help="series also run in R for the ratio (0: skip R)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--last",
        type=int,
        default=4,
        help="latest weeks evaluated (default: a daily run re-checking 4 weeks; 0: backfill)",
    )
    args = ap.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    counts, dates = simulate(args.areas, args.diseases, args.years, args.seed)
    span = f"latest {args.last} week(s)" if args.last else "all weeks after the baseline"
    print(f"{counts.shape[1]} series × {counts.shape[0]} weeks, evaluating {span}")
    full = run_rhip(counts, dates, methods, args.last)
    ratio: dict[str, tuple[float, float]] = {}
    if args.r_series and shutil.which("Rscript"):
        sub = counts[:, : args.r_series]
        mine = run_rhip(sub, dates, methods, args.last)
        theirs = run_r(sub, dates, methods, args.last)
        ratio = {m: (theirs[m], mine[m]) for m in methods if m in theirs}
    print(f"{'method':<12} {'all series s':>12} {'R s (sub)':>10} {'RHIP s (sub)':>12} {'R/RHIP':>8}")
    for m in methods:
        r, p = ratio.get(m, (float("nan"), float("nan")))
        print(f"{m:<12} {full[m]:>12.2f} {r:>10.2f} {p:>12.3f} {r / p if p else float('nan'):>8.1f}")
    print(f"{'total':<12} {sum(full.values()):>12.2f}")


if __name__ == "__main__":
    main()
