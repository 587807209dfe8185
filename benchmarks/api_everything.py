"""``$everything`` of a whole MPI resident against one record's, on SQLite (and PostgreSQL with --pg).

Writes a small region (``--residents`` people, each with ``--records`` source Patients at different
facilities linked by the MPI, each record with ``--visits`` Encounters and two Observations per
visit), then times, for sampled residents: one source record's ``$everything``, the golden
Patient's (all records at once, OR'ed compartment searches), and the per-record loop the /mpi
route used before (one ``$everything`` per record, merged). Prints medians and their ratios:
compare ratios, the machine is shared.

    .venv/bin/python benchmarks/api_everything.py
    .venv/bin/python benchmarks/api_everything.py --pg postgresql+psycopg://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from rhip.api.everything import everything
from rhip.fhir import systems
from rhip.fhir.identifiers import make_citizen_id
from rhip.mpi.schema import ensure_schema
from rhip.mpi.service import match_and_link
from rhip.store import Store


def _bodies(person: int, records: int, visits: int) -> list[dict[str, Any]]:
    cid = make_citizen_id(
        "370102", date(1950 + person % 50, 1 + person % 12, 1 + person % 28), person % 999, "male"
    )
    out: list[dict[str, Any]] = []
    for r in range(records):
        pid = f"p{person}r{r}"
        out.append({
            "resourceType": "Patient", "id": pid, "gender": "male",
            "birthDate": f"{cid[6:10]}-{cid[10:12]}-{cid[12:14]}",
            "identifier": [{"system": systems.CITIZEN_ID, "value": cid}],
            "name": [{"family": "王", "given": [f"名{person}"]}],
        })  # fmt: skip
        for v in range(visits):
            enc = f"{pid}e{v}"
            out.append({
                "resourceType": "Encounter", "id": enc, "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "subject": {"reference": f"Patient/{pid}"},
                "serviceProvider": {"reference": f"Organization/org{r}"},
            })  # fmt: skip
            for k in range(2):
                out.append({
                    "resourceType": "Observation", "id": f"{enc}o{k}", "status": "final",
                    "code": {"coding": [{"system": systems.LOINC, "code": "2345-7"}]},
                    "subject": {"reference": f"Patient/{pid}"},
                    "encounter": {"reference": f"Encounter/{enc}"},
                })  # fmt: skip
    return out


def _seed(store: Store, residents: int, records: int, visits: int) -> list[tuple[str, list[str]]]:
    ensure_schema(store.engine)
    store.bulk_write(
        [{"resourceType": "Organization", "id": f"org{r}", "name": str(r)} for r in range(records)]
    )
    groups = []
    for person in range(residents):
        bodies = _bodies(person, records, visits)
        store.bulk_write(bodies)
        ids = [b["id"] for b in bodies if b["resourceType"] == "Patient"]
        golden = {match_and_link(store, store.read("Patient", pid)).resident_id for pid in ids}
        if len(golden) == 1:
            groups.append((golden.pop(), ids))
    return groups


def _median_ms(work: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _per_record(store: Store, ids: list[str]) -> int:
    found: dict[tuple[str, str], object] = {}
    for pid in ids:
        for res in everything(store, pid, resident=False):
            found.setdefault((res["resourceType"], res["id"]), res)
    return len(found)


def run(url: str, residents: int, records: int, visits: int, sample: int) -> None:
    """Seed, time, print one line per measure."""
    store = Store(url)
    try:
        groups = _seed(store, residents, records, visits)
        backend = url.split(":")[0]
        print(
            f"{backend}: {len(groups)} residents, {records} linked records each, {visits} visits per record"
        )
        picked = groups[:: max(1, len(groups) // sample)][:sample]
        golden, ids = picked[0]
        sizes = (len(everything(store, ids[0])), len(everything(store, golden)), _per_record(store, ids))
        one = statistics.median(_median_ms(lambda i=i: everything(store, i[0]), 3) for _, i in picked)
        whole = statistics.median(_median_ms(lambda g=g: everything(store, g), 3) for g, _ in picked)
        loop = statistics.median(_median_ms(lambda i=i: _per_record(store, i), 3) for _, i in picked)
        print(f"  one record's $everything   {one:8.1f} ms  ({sizes[0]} resources)")
        print(f"  golden $everything        {whole:8.1f} ms  ({sizes[1]} resources)  x{whole / one:.2f}")
        print(f"  per-record loop (before)  {loop:8.1f} ms  ({sizes[2]} resources)  x{loop / one:.2f}")
    finally:
        store.close()


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--residents", type=int, default=200)
    parser.add_argument("--records", type=int, default=3)
    parser.add_argument("--visits", type=int, default=10)
    parser.add_argument("--sample", type=int, default=10)
    parser.add_argument("--pg", help="PostgreSQL admin URL: a scratch database is created and dropped")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run(f"sqlite:///{Path(tmp) / 'rhip.sqlite'}", args.residents, args.records, args.visits, args.sample)
    if args.pg:
        from sqlalchemy import create_engine, text

        name = f"rhip_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(args.pg, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            run(f"{args.pg.rsplit('/', 1)[0]}/{name}", args.residents, args.records, args.visits, args.sample)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()
