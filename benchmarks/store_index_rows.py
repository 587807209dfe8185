"""CPU cost of deriving search-index rows from a resource (``index_tuples``), per resource.

Runs ``rhip.store.index_extract.index_tuples`` over the ~1 KB Patients and vital-sign Observations
of ``benchmarks/ingest_ndjson.py`` (parsed once, ahead of the timing) and prints the CPU time per
resource: the minimum and the median of several rounds, for Patients, Observations and the 1:4
mix of the ingest benchmark. Run it with each tree's interpreter to compare two trees.

Usage: .venv/bin/python benchmarks/store_index_rows.py [--resources 5000] [--rounds 9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import orjson
from ingest_ndjson import _resource

from rhip.store.index_extract import index_tuples


def cpu_us_per_resource(
    resources: list[dict[str, Any]], rounds: int, fn: Callable[[Any], Any]
) -> list[float]:
    """CPU microseconds per resource of ``fn`` over ``resources``, one figure per round."""
    figures = []
    for _ in range(rounds):
        start = time.process_time()
        for resource in resources:
            fn(resource)
        figures.append((time.process_time() - start) / len(resources) * 1e6)
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resources", type=int, default=5_000)
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    # parsed as the ingest pipeline gets them: fresh objects from JSON, not the generator's dicts
    mix = [orjson.loads(orjson.dumps(_resource(i))) for i in range(args.resources)]
    for resource in mix:  # compiles the plans and warms the caches, as a long load would
        index_tuples(resource)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for label, chosen in (
        ("Patient", [r for r in mix if r["resourceType"] == "Patient"]),
        ("Observation", [r for r in mix if r["resourceType"] == "Observation"]),
        ("mix (1:4)", mix),
    ):
        figures = cpu_us_per_resource(chosen, args.rounds, index_tuples)
        low, mid = min(figures), statistics.median(figures)
        print(f"{label:<12} min {low:6.2f} µs  median {mid:6.2f} µs per resource")


if __name__ == "__main__":
    main()
