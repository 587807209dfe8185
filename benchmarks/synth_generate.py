"""Benchmark ``rhip generate``: wall and CPU time, peak memory, output size, extrapolation to 1M.

    .venv/bin/python benchmarks/synth_generate.py --residents 10000 --years 3 --workers 2

The machine is shared, so CPU seconds (this process and its workers) are reported next to wall
time; the baseline is the time to write the same number of bytes to the same disk, so the ratio
says how far generation is from being I/O bound.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _peak_mb() -> tuple[float, float]:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_maxrss / 1024, kids.ru_maxrss / 1024


def _size(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def _disk_baseline(folder: Path, nbytes: int) -> float:
    block = os.urandom(1 << 20)
    path = folder / "baseline.bin"
    t0 = time.perf_counter()
    with path.open("wb") as fh:
        for _ in range(max(1, nbytes >> 20)):
            fh.write(block)
        fh.flush()
        os.fsync(fh.fileno())
    elapsed = time.perf_counter() - t0
    path.unlink()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--residents", type=int, default=10_000)
    parser.add_argument("--years", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--out", type=Path, default=None, help="Output folder (default: a temp folder, removed)"
    )
    args = parser.parse_args()

    from rhip.synth import generate

    tmp = Path(tempfile.mkdtemp(prefix="rhip-synth-bench-"))
    out = args.out or tmp / "region"
    try:
        cpu0, t0 = _cpu(), time.perf_counter()
        manifest = generate(
            out, residents=args.residents, years=args.years, seed=args.seed, workers=args.workers
        )
        wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
        n_files, n_bytes = _size(out)
        base = _disk_baseline(tmp, n_bytes)
        main_mb, worker_mb = _peak_mb()
        scale = 1_000_000 / args.residents * (3 / args.years)
        rows = [
            ("residents x years", f"{args.residents:,} x {args.years}"),
            ("workers", str(args.workers)),
            ("wall time", f"{wall:.1f} s"),
            ("CPU time (all processes)", f"{cpu:.1f} s"),
            ("residents / CPU-second", f"{args.residents / cpu:,.0f}"),
            ("peak RSS main / largest worker", f"{main_mb:.0f} MB / {worker_mb:.0f} MB"),
            ("output", f"{n_files:,} files, {n_bytes / 1e6:,.0f} MB"),
            ("records (manifest)", f"{sum(manifest.files.values()):,}"),
            ("disk baseline (same bytes)", f"{base:.1f} s  (generation = {wall / max(base, 1e-9):.1f}x)"),
            (
                "extrapolated 1M x 3y CPU",
                f"{cpu * scale / 60:.1f} CPU-min = "
                f"{cpu * scale / 60 / max(1, args.workers):.1f} min on {args.workers} idle cores",
            ),
            ("extrapolated 1M x 3y output", f"{n_bytes * scale / 1e9:.0f} GB"),
        ]
        width = max(len(k) for k, _ in rows)
        for key, value in rows:
            print(f"{key:<{width}}  {value}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
