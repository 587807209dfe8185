"""The MPI entry points other modules call: match on arrival, resolve a card, read a resident.

``match_and_link(store, patient)`` is what ingest calls for every stored source Patient (and the
API after a Patient create/update); it links the record in one locked transaction and then
refreshes the golden Patient of every resident it touched.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from rhip.config import get_settings
from rhip.errors import InvalidRequest, ResourceNotFound
from rhip.mpi.features import extract_features
from rhip.mpi.golden import StoreLike, is_golden, refresh_golden
from rhip.mpi.link import LinkDecision, link_features
from rhip.mpi.model import MatchModel, load_model
from rhip.mpi.protect import MpiSeal
from rhip.mpi.schema import ensure_schema, mpi_card, mpi_record, mpi_resident, mpi_review
from rhip.store.engine import write_transaction

log = logging.getLogger(__name__)

_READY: set[str] = set()
_READY_LOCK = threading.Lock()
_MODEL: dict[str, tuple[MatchModel, dict[str, list[float]]]] = {}


def model_path() -> Path:
    """Where a trained model is kept for this installation (``<data_dir>/mpi/model.json``)."""
    return get_settings().data_dir / "mpi" / "model.json"


def current_model(path: Path | None = None) -> tuple[MatchModel, dict[str, list[float]]]:
    """The model in force and its level weights (cached; :func:`reset_model_cache` after training)."""
    key = str(path or model_path())
    if key not in _MODEL:
        model = load_model(Path(key))
        _MODEL[key] = (model, model.level_weights())
    return _MODEL[key]


def reset_model_cache() -> None:
    """Forget cached models (after ``rhip link --train`` wrote a new one)."""
    _MODEL.clear()


def ready(engine: Engine) -> None:
    """Make sure the MPI tables exist on this engine (once per process and engine)."""
    key = str(engine.url)  # one database per URL; object ids are reused after disposal
    with _READY_LOCK:
        if key not in _READY:
            ensure_schema(engine)
            _READY.add(key)


def match_and_link(
    store: StoreLike, patient: dict[str, Any], *, model: MatchModel | None = None
) -> LinkDecision:
    """Match one stored source Patient against the residents and link it to exactly one of them.

    Args:
        store: the operational store (its engine holds the MPI tables; golden Patients go there).
        patient: the source Patient as stored (must have an ``id``).
        model: a model to use instead of the installation's one.
    Raises:
        InvalidRequest: the Patient has no id, or it is a golden Patient.
    """
    if not patient.get("id"):
        raise InvalidRequest("MPI: Patient has no id (store it first)", expression=("Patient.id",))
    if is_golden(patient):
        raise InvalidRequest("MPI: a golden Patient is not a source record", expression=("Patient.meta.tag",))
    ready(store.engine)
    if model is None:
        model, weights = current_model()
    else:
        weights = model.level_weights()
    features = MpiSeal.of(store.engine).features(extract_features(patient))
    with write_transaction(store.engine) as conn:
        decision = link_features(conn, features, model, weights)
    refresh_golden(store, decision.touched_residents)
    log.debug("mpi: record linked outcome=%s rule=%s", decision.outcome, decision.rule)
    return decision


def parse_token(card: str) -> tuple[str, str]:
    """Split ``system|value`` (both required)."""
    system, sep, value = card.partition("|")
    if not sep or not system or not value:
        raise InvalidRequest("card must be given as system|value", expression=("card",))
    return system, value


def resident_for_record(conn: Connection, record_id: str) -> str | None:
    """The resident id a source Patient is linked to (None when unknown to the MPI)."""
    row = conn.execute(select(mpi_record.c.resident_id).where(mpi_record.c.record_id == record_id)).first()
    return None if row is None else str(row[0])


def resident_records(conn: Connection, patient_id: str) -> tuple[str, list[str]] | None:
    """The resident a Patient id belongs to and every source record linked to it (id order).

    ``patient_id`` may be a resident's (its golden Patient's) id or a linked source record's id, so
    ``Patient/$everything`` reaches the whole resident from either. None when the MPI knows neither.
    """
    known = conn.execute(
        select(mpi_resident.c.resident_id).where(mpi_resident.c.resident_id == patient_id)
    ).first()
    resident = patient_id if known is not None else resident_for_record(conn, patient_id)
    if resident is None:
        return None
    rows = conn.execute(
        select(mpi_record.c.record_id)
        .where(mpi_record.c.resident_id == resident)
        .order_by(mpi_record.c.record_id)
    ).scalars()
    return resident, [str(r) for r in rows]


def resolve_card(conn: Connection, card: str) -> str:
    """The resident id for a card ``system|value``: any source-record card, the VHC, or a resident id.

    Raises:
        ResourceNotFound: no record carries that card.
    """
    system, value = parse_token(card)
    from rhip.fhir import systems

    if system == systems.VIRTUAL_HEALTH_CARD:
        row = conn.execute(select(mpi_resident.c.resident_id).where(mpi_resident.c.vhc == value)).first()
        if row is not None:
            return follow_merges(conn, str(row[0]))
    row = conn.execute(
        select(mpi_record.c.resident_id)
        .join(mpi_card, mpi_card.c.record_id == mpi_record.c.record_id)
        .where(mpi_card.c.system == system, mpi_card.c.value.in_(MpiSeal.of(conn).card_values(system, value)))
        .limit(1)
    ).first()
    if row is None:
        raise ResourceNotFound("no resident holds that card")
    return follow_merges(conn, str(row[0]))


def follow_merges(conn: Connection, resident_id: str) -> str:
    """The surviving resident after any chain of merges."""
    seen: set[str] = set()
    current = resident_id
    while current not in seen:
        seen.add(current)
        row = conn.execute(
            select(mpi_resident.c.status, mpi_resident.c.merged_into).where(
                mpi_resident.c.resident_id == current
            )
        ).first()
        if row is None or row.status != "merged" or not row.merged_into:
            return current
        current = row.merged_into
    return current


def resident_summary(conn: Connection, resident_id: str) -> dict[str, Any]:
    """Resident row plus its linked record ids, cards and link sources.

    Raises:
        ResourceNotFound: unknown resident.
    """
    res = (
        conn.execute(select(mpi_resident).where(mpi_resident.c.resident_id == resident_id)).mappings().first()
    )
    if res is None:
        raise ResourceNotFound("unknown resident")
    records = conn.execute(
        select(mpi_record.c.record_id, mpi_record.c.link_source, mpi_record.c.link_weight)
        .where(mpi_record.c.resident_id == resident_id)
        .order_by(mpi_record.c.record_id)
    ).all()
    ids = [r.record_id for r in records]
    cards = conn.execute(select(mpi_card).where(mpi_card.c.record_id.in_(ids))).all() if ids else []
    return {
        "resident_id": resident_id,
        "vhc": res["vhc"],
        "status": res["status"],
        "merged_into": res["merged_into"],
        "records": [
            {"record_id": r.record_id, "link_source": r.link_source, "link_weight": r.link_weight}
            for r in records
        ],
        "cards": sorted({(c.system, c.value, c.record_id) for c in cards}),
    }


def index_counts(engine: Engine) -> dict[str, int]:
    """Size of the index: active residents, linked source records, and possible matches awaiting review."""
    ensure_schema(engine)
    residents = select(func.count()).select_from(mpi_resident).where(mpi_resident.c.status == "active")
    records = select(func.count()).select_from(mpi_record)
    reviews = select(func.count()).select_from(mpi_review).where(mpi_review.c.status == "open")
    with engine.connect() as conn:
        return {
            "residents": int(conn.execute(residents).scalar_one()),
            "source_records": int(conn.execute(records).scalar_one()),
            "review_open": int(conn.execute(reviews).scalar_one()),
        }
