"""Batch linkage time and memory: ``relink_all`` over N source records in a store.

Loads a seeded noisy population into a store (not timed), then runs the full batch re-link the way
``rhip link --all`` does and reports each phase: reading and featurising, Splink prediction,
clustering, rewriting the MPI tables and the golden Patients; optionally training first.

    .venv/bin/python benchmarks/mpi_batch.py --records 100000
    .venv/bin/python benchmarks/mpi_batch.py --records 1000000 --no-golden
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from rhip.mpi.batch import collect_features, link_all
from rhip.mpi.evaluate import evaluate
from rhip.mpi.model import load_model
from rhip.mpi.relink import relink_all
from rhip.mpi.sample import sample_population
from rhip.mpi.schema import ensure_schema
from rhip.mpi.truth import predicted_links
from rhip.store import Store


def linkage_only(records: int, seed: int) -> None:
    """Featurise, score and cluster in memory: the part of the batch that grows with pairs."""
    patients, truth = sample_population(max(1, int(records / 1.5)), seed=seed, records_per_resident=1.5)
    clock = time.perf_counter()
    table = collect_features(patients)
    featured = time.perf_counter() - clock
    del patients
    result = link_all(table, load_model())
    total = time.perf_counter() - clock
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    acc = evaluate({k: str(v) for k, v in result.clusters.items()}, truth)
    print("| records | pairs scored | featurise | predict | cluster | total | peak RSS | pair P | pair R |")
    print("|---|---|---|---|---|---|---|---|---|")
    seconds = result.seconds
    cells = [f"{len(table):,}", f"{result.scored_pairs:,}", f"{featured:.0f} s",
             f"{seconds['predict']:.0f} s", f"{seconds['cluster']:.0f} s", f"{total:.0f} s", f"{rss:.0f} MB",
             f"{acc.pair_precision:.4f}", f"{acc.pair_recall:.4f}"]  # fmt: skip
    print("| " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--url", help="Store URL (default: a SQLite file in a temp folder).")
    parser.add_argument(
        "--train", action="store_true", help="Re-estimate the model first (adds ~40 s of u sampling)."
    )
    parser.add_argument("--no-golden", action="store_true", help="Skip rewriting golden Patients.")
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument(
        "--linkage-only", action="store_true", help="No store: featurise, Splink predict and cluster only."
    )
    args = parser.parse_args()
    if args.linkage_only:
        linkage_only(args.records, args.seed)
        return

    url = args.url or f"sqlite:///{Path(tempfile.mkdtemp(prefix='rhip-mpi-')) / 'store.sqlite'}"
    store = Store(url)
    ensure_schema(store.engine)
    clock = time.perf_counter()
    patients, truth = sample_population(
        max(1, int(args.records / 1.5)), seed=args.seed, records_per_resident=1.5
    )
    store.bulk_write(patients)
    loaded = time.perf_counter() - clock
    count = len(patients)
    del patients
    clock = time.perf_counter()
    report = relink_all(store, retrain=args.train, golden=not args.no_golden)
    total = time.perf_counter() - clock
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with store.engine.connect() as conn:
        acc = evaluate(predicted_links(conn), truth)
    phases = " | ".join(f"{k} {v:.0f}s" for k, v in report.seconds.items())
    print("| records | residents | pairs scored | total | phases | peak RSS | pair P | pair R |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {count:,} | {report.residents:,} | {report.scored_pairs:,} | {total:.0f} s | {phases} | "
          f"{rss:.0f} MB | {acc.pair_precision:.4f} | {acc.pair_recall:.4f} |")  # fmt: skip
    print(f"\n(store {store.engine.dialect.name}; population generated and loaded in {loaded:.0f} s)")
    store.close()


if __name__ == "__main__":
    main()
