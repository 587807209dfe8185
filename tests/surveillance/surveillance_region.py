"""The generated region the surveillance tests count from: a store and a materialised lake.

3,000 residents over 4 years (seed 7, FHIR facilities only) are generated, written to a SQLite
store, exported to a Parquet lake and materialised.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TYPES = ("Patient", "Encounter", "Condition", "Organization")


def build_region(root: Path) -> dict[str, Any]:
    """Generate the region under ``root``; returns root, gen, lake, store (open) and url."""
    from rhip.lake import export_store, materialize
    from rhip.store import Store
    from rhip.synth import generate

    generate(root / "gen", residents=3000, years=4, seed=7, formats=["fhir"])
    url = f"sqlite:///{root / 'store.db'}"
    store = Store(url)
    files = [p for p in (root / "gen").glob("fhir/*/*.ndjson") if p.stem in TYPES]
    resources = [
        json.loads(line) for p in [*files, root / "gen/region/Organization.ndjson"] for line in p.open()
    ]
    store.bulk_write(resources)
    export_store(store, root / "lake")
    materialize(root / "lake")
    return {"root": root, "gen": root / "gen", "lake": root / "lake", "store": store, "url": url}
