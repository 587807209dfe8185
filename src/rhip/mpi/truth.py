"""Read the generator's truth (``truth/patient_links.csv``) and map it onto the MPI's records.

The generator names each source record by (facility code, source patient id). Ingest keeps that
id as the Patient id for FHIR sources and as the facility's MRN card for the others, so a truth row
is matched to a record by id first and by MRN card second.
"""

from __future__ import annotations

import csv
from pathlib import Path

from sqlalchemy import Connection, Engine, select

from rhip.errors import InvalidRequest
from rhip.fhir import systems
from rhip.mpi.evaluate import Accuracy, evaluate
from rhip.mpi.schema import mpi_card, mpi_record


def read_truth(path: Path) -> list[tuple[str, str, str]]:
    """Rows (facility code, source patient id, true resident id) of a patient_links.csv file.

    ``path`` may be the file, the ``truth`` folder or the generated region folder.
    """
    given = path
    if path.is_dir():
        path = (
            path / "patient_links.csv"
            if (path / "patient_links.csv").exists()
            else path / "truth" / "patient_links.csv"
        )
    if not path.is_file():
        raise InvalidRequest(
            f"{given}: no patient_links.csv; give the file or a folder written by `rhip generate` "
            "(it holds truth/patient_links.csv)"
        )
    with path.open(encoding="utf-8", newline="") as handle:
        return [
            (r["facility_code"], r["source_patient_id"], r["resident_id"]) for r in csv.DictReader(handle)
        ]


def truth_by_record(conn: Connection, rows: list[tuple[str, str, str]]) -> dict[str, str]:
    """Record id -> true resident id for the truth rows the MPI knows."""
    known = {r[0] for r in conn.execute(select(mpi_record.c.record_id))}
    mrn: dict[tuple[str, str], str] = {}
    for system, value, record_id in conn.execute(
        select(mpi_card.c.system, mpi_card.c.value, mpi_card.c.record_id)
    ):
        if system.endswith("/mrn"):
            mrn[(system, value)] = record_id
    out: dict[str, str] = {}
    for facility, source_id, resident in rows:
        if source_id in known:
            out[source_id] = resident
            continue
        record = mrn.get((systems.facility_card_system(facility, "mrn"), source_id))
        if record is not None:
            out[record] = resident
    return out


def predicted_links(conn: Connection) -> dict[str, str]:
    """Record id -> resident id as the MPI holds them now."""
    return {
        r.record_id: r.resident_id
        for r in conn.execute(select(mpi_record.c.record_id, mpi_record.c.resident_id))
    }


def accuracy_against_truth(engine: Engine, path: Path) -> Accuracy:
    """Pairwise, B-cubed and cluster accuracy of the MPI's current links against a truth file.

    ``path``: a generated region folder, its ``truth`` folder or ``patient_links.csv``.
    """
    with engine.connect() as conn:
        return evaluate(predicted_links(conn), truth_by_record(conn, read_truth(path)))
