"""Full vs incremental Parquet export from the store: time of a full export and of an export after
1% of the resources changed (target: incremental <= 10% of full).

    .venv/bin/python benchmarks/lake_export.py --observations 100000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from rhip.lake.export import export_store
from rhip.store import Store


def _observation(i: int, value: float) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"o{i}",
        "status": "final",
        "category": [{"coding": [{"code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
        "subject": {"reference": f"Patient/p{i % 1000}"},
        "effectiveDateTime": "2024-05-01T08:00:00+08:00",
        "valueQuantity": {"value": value, "unit": "mmHg", "code": "mm[Hg]"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--observations", type=int, default=100_000)
    parser.add_argument("--changed", type=float, default=0.01, help="fraction updated before the delta")
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lake-export-"))
    store = Store(args.database_url or f"sqlite:///{work / 'rhip.sqlite'}")
    t0 = time.perf_counter()
    store.bulk_write(_observation(i, 120.0) for i in range(args.observations))
    print(f"loaded {args.observations:,} Observations into the store in {time.perf_counter() - t0:.1f}s")
    full = export_store(store, work / "lake")
    n_changed = int(args.observations * args.changed)
    step = max(1, args.observations // max(n_changed, 1))
    time.sleep(0.01)
    store.bulk_write(_observation(i, 130.0) for i in range(0, args.observations, step))
    delta = export_store(store, work / "lake")
    store.close()
    print(f"{'export':<14}{'rows':>10}{'seconds':>10}{'rows/s':>12}")
    print(f"{'full':<14}{full.total:>10,}{full.seconds:>10.2f}{full.total / full.seconds:>12,.0f}")
    rate = delta.total / max(delta.seconds, 1e-9)
    print(f"{'incremental':<14}{delta.total:>10,}{delta.seconds:>10.2f}{rate:>12,.0f}")
    print(f"incremental / full time: {delta.seconds / full.seconds:.3f} (target <= 0.10)")


if __name__ == "__main__":
    main()
