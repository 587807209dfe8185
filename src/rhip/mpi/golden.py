"""The golden Patient of each resident: survivorship over its linked source records.

Each resident is materialised in the store as a Patient whose id is the resident id, tagged
``meta.tag = {system: MPI_TAG, code: golden}``, carrying the virtual resident health card and the
best-known demographics, and listing every linked source Patient in ``Patient.link`` (type
``seealso``, as HAPI FHIR's MDM does). A merged-away resident keeps its golden Patient, inactive,
with a ``replaced-by`` link to the survivor. Survivorship rules (docs/mpi.md):

* birth date and sex: those encoded in the trusted (GB 11643-valid, consistent) citizen ID held by
  most records, else the most frequent value (the ID itself stays on the source records, so that
  an identifier search answers with source records only);
* name: the most frequent full name, preferring records with a trusted citizen ID, newest on ties;
* phone and address: from the most recently updated record that has them.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, select

from rhip.fhir import systems
from rhip.fhir.identifiers import check_citizen_id
from rhip.mpi.protect import MpiSeal
from rhip.mpi.schema import mpi_record, mpi_resident

log = logging.getLogger(__name__)


class StoreLike(Protocol):
    """What the MPI needs of :class:`rhip.store.Store`."""

    engine: Engine

    def update(self, res_type: str, res_id: str, resource: dict, *, if_match: int | None = None) -> Any: ...
    def create(self, resource: dict, *, if_none_exist: list[tuple[str, str]] | None = None) -> Any: ...
    def read(self, res_type: str, res_id: str) -> dict: ...
    def iter_current(
        self, res_type: str, *, since: float | None = None, include_deleted: bool = False
    ) -> Iterator[tuple[dict | None, str, float, bool]]: ...
    def bulk_write(self, resources: Iterable[dict], *, batch_size: int = 2000) -> Any: ...
    def search(
        self, res_type: str | None, params: list[tuple[str, str]], *, count: int = 50, offset: int = 0
    ) -> Any: ...


def golden_tag() -> dict[str, str]:
    """The meta.tag coding that marks a golden (resident) Patient."""
    return {"system": systems.MPI_TAG, "code": "golden", "display": "MPI resident record"}


def is_golden(patient: dict[str, Any]) -> bool:
    """True for a golden Patient written by the MPI (never matched as a source record)."""
    tags = (patient.get("meta") or {}).get("tag") or []
    return any(t.get("system") == systems.MPI_TAG and t.get("code") == "golden" for t in tags)


def _most_common(values: Iterable[str | None]) -> str | None:
    counted = Counter(v for v in values if v)
    if not counted:
        return None
    # Counter keeps first-seen order on ties; rows arrive newest first.
    return counted.most_common(1)[0][0]


def build_golden(resident: dict[str, Any], records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The golden Patient body for a resident row and its record rows (newest first)."""
    cid = _most_common(r["cid"] for r in records)
    check = check_citizen_id(cid) if cid else None
    trusted = [r for r in records if r["cid"]] or list(records)
    name = _most_common(r["name"] for r in trusted)
    family = next((r["family"] for r in trusted if r["name"] == name and r["family"]), None)
    dob = (
        check.birth_date.isoformat()
        if check and check.birth_date
        else _most_common(r["dob"] for r in records)
    )
    sex = check.sex if check and check.sex else _most_common(r["sex"] for r in records)
    phone = next((r["phone"] for r in records if r["phone"]), None)
    address = next((r for r in records if r["address"] or r["district"]), None)
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "id": resident["resident_id"],
        "meta": {"tag": [golden_tag()]},
        "active": resident["status"] == "active",
        "identifier": [{"use": "official", "system": systems.VIRTUAL_HEALTH_CARD, "value": resident["vhc"]}],
    }
    if name:
        entry: dict[str, Any] = {"use": "official", "text": name}
        if family and name.startswith(family):
            entry.update(family=family, given=[name[len(family) :]] if len(name) > len(family) else [])
        body["name"] = [entry]
    if sex:
        body["gender"] = sex
    if dob:
        body["birthDate"] = dob
    if phone:
        body["telecom"] = [{"system": "phone", "value": phone}]
    if address is not None:
        addr = {k: v for k, v in (("text", address["address"]), ("district", address["district"])) if v}
        body["address"] = [{"use": "home", **addr}]
    if any(r["deceased"] for r in records):
        body["deceasedBoolean"] = True
    links = [{"other": {"reference": f"Patient/{r['record_id']}"}, "type": "seealso"} for r in records]
    if resident["status"] == "merged" and resident["merged_into"]:
        links.insert(0, {"other": {"reference": f"Patient/{resident['merged_into']}"}, "type": "replaced-by"})
    if links:
        body["link"] = links
    return body


def golden_bodies(conn: Connection, resident_ids: Iterable[str]) -> list[dict[str, Any]]:
    """Golden Patient bodies of the given residents, read from the MPI tables (IDs and phones decrypted)."""
    seal = MpiSeal.of(conn)
    ids = sorted(set(resident_ids))
    out: list[dict[str, Any]] = []
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        residents = (
            conn.execute(select(mpi_resident).where(mpi_resident.c.resident_id.in_(chunk))).mappings().all()
        )
        rows = conn.execute(
            select(mpi_record)
            .where(mpi_record.c.resident_id.in_(chunk))
            .order_by(mpi_record.c.updated.desc(), mpi_record.c.record_id)
        ).mappings()
        by_resident: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_resident.setdefault(row["resident_id"], []).append(seal.reveal(dict(row)))
        out.extend(build_golden(dict(res), by_resident.get(res["resident_id"], [])) for res in residents)
    return out


def iter_golden(conn: Connection, resident_ids: set[str]) -> Iterator[dict[str, Any]]:
    """Golden bodies of many residents from one ordered scan (the batch path: no IN lists)."""
    seal = MpiSeal.of(conn)
    residents = {
        r["resident_id"]: dict(r)
        for r in conn.execute(select(mpi_resident)).mappings()
        if r["resident_id"] in resident_ids
    }
    rows = conn.execution_options(stream_results=True, yield_per=5000).execute(
        select(mpi_record).order_by(
            mpi_record.c.resident_id, mpi_record.c.updated.desc(), mpi_record.c.record_id
        )
    )
    current: str | None = None
    group: list[dict[str, Any]] = []
    for row in rows.mappings():
        if row["resident_id"] != current:
            if current in residents:
                yield build_golden(residents.pop(current), group)
            current, group = row["resident_id"], []
        group.append(seal.reveal(dict(row)))
    if current in residents:
        yield build_golden(residents.pop(current), group)
    for resident in residents.values():  # residents left without records (retired)
        yield build_golden(resident, [])


def refresh_golden(store: StoreLike, resident_ids: Iterable[str]) -> int:
    """Rewrite the golden Patients of these residents in the store; returns how many were written."""
    with store.engine.connect() as conn:
        bodies = golden_bodies(conn, resident_ids)
    for body in bodies:
        store.update("Patient", body["id"], body)
    return len(bodies)
