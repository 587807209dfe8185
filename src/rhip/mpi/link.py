"""Real-time linkage: match one source record on arrival and link it to exactly one resident.

The caller (ingest, the API, the batch re-link) hands over a Patient; the record is reduced to its
features, candidates are fetched through the blocking-key index, scored with the Fellegi–Sunter
model and the record is linked (deterministically on a trusted citizen ID, or when the best
resident scores at or above the link threshold), queued for review (possible match: it gets its own
resident until a reviewer decides) or given a new resident. All of it happens in one transaction
that first takes locks on the record's blocking keys (PostgreSQL advisory locks; on SQLite a write
to ``mpi_lock``), so that two records of the same new person arriving at the same moment on two
connections are serialised and the second one finds the first.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, delete, insert, select, text, update

from rhip.fhir.identifiers import check_digit
from rhip.mpi.features import RecordFeatures, blocking_keys
from rhip.mpi.model import MatchModel, PairScore, auto_link_allowed, score_pair
from rhip.mpi.protect import MpiSeal
from rhip.mpi.schema import mpi_card, mpi_key, mpi_lock, mpi_record, mpi_resident, mpi_review
from rhip.store.engine import bulk_insert

log = logging.getLogger(__name__)

#: Record ids bound per ``IN`` list (far under SQLite's limit on bound parameters).
_ID_CHUNK = 500

#: Columns of ``mpi_record`` that mirror :class:`RecordFeatures`.
FEATURE_COLUMNS = (
    "name", "family", "name_py", "family_py", "dob", "dob_swap", "sex", "phone",
    "district", "address", "name_a", "address_a", "cid", "cid_raw", "phone_sm4",
)  # fmt: skip


@dataclass(frozen=True)
class Candidate:
    """A resident considered for a record, with its best pair score and that pair's evidence."""

    resident_id: str
    record_id: str
    weight: float
    probability: float
    evidence: dict[str, tuple[str, float]]
    rule: str  # citizen-id | probabilistic


@dataclass
class LinkDecision:
    """What happened to one record.

    ``outcome``: ``link`` (joined an existing resident), ``review`` (own resident plus open review
    items), ``new`` (own new resident) or ``unchanged`` (manual link kept, or same resident kept).
    """

    record_id: str
    resident_id: str
    outcome: str
    rule: str
    weight: float | None = None
    probability: float | None = None
    candidates: list[Candidate] = field(default_factory=list)
    review_ids: list[int] = field(default_factory=list)
    previous_resident_id: str | None = None

    @property
    def touched_residents(self) -> set[str]:
        """Residents whose golden record must be refreshed."""
        out = {self.resident_id}
        if self.previous_resident_id:
            out.add(self.previous_resident_id)
        return out


def new_vhc() -> str:
    """A new virtual resident health card number: 'V' + 17 random digits + GB 11643-style check."""
    digits = f"{secrets.randbelow(10**17):017d}"
    return f"V{digits}{check_digit(digits)}"


def new_resident(conn: Connection, now: float) -> str:
    """Insert a resident row and return its id (which is also the golden Patient id)."""
    resident_id = secrets.token_hex(16)
    conn.execute(
        insert(mpi_resident).values(
            resident_id=resident_id, vhc=new_vhc(), status="active", created=now, updated=now
        )
    )
    return resident_id


def lock_keys(conn: Connection, keys: Iterable[str]) -> None:
    """Serialise writers that share a key: advisory locks on PostgreSQL, the write lock on SQLite.

    On PostgreSQL one statement takes every lock, in sorted order (``unnest`` yields the array in
    order), so two writers sharing keys cannot deadlock and a page of thousands of records costs
    one round trip.
    """
    if conn.dialect.name == "postgresql":
        ordered = sorted(set(keys))
        if ordered:
            conn.execute(_PG_LOCKS, {"keys": ordered})
    else:
        conn.execute(update(mpi_lock).where(mpi_lock.c.id == 1).values(n=mpi_lock.c.n + 1))


_PG_LOCKS = text(
    "SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) FROM unnest(CAST(:keys AS text[])) AS k"
)


def features_from_row(row: Any, seal: MpiSeal) -> RecordFeatures:
    """Rebuild (sealed) comparison features from an ``mpi_record`` row; the raw ID is decrypted."""
    m = row._mapping
    problems = tuple((m["cid_problems"] or "").split(",")) if m["cid_problems"] else ()
    values = {c: m[c] for c in FEATURE_COLUMNS}
    values["cid_raw"] = seal.raw_cid(values["cid_raw"])
    return RecordFeatures(
        record_id=m["record_id"], **values, cid_problems=problems, deceased=bool(m["deceased"]),
    )  # fmt: skip


def find_candidates(
    conn: Connection, features: RecordFeatures, model: MatchModel, weights: dict[str, list[float]]
) -> list[Candidate]:
    """Best-scoring record of every resident sharing a blocking key, best resident first.

    ``features`` are sealed (:meth:`rhip.mpi.protect.MpiSeal.features`), as the stored rows are.
    """
    seal = MpiSeal.of(conn)
    keys = blocking_keys(features)
    if not keys:
        return []
    ids = select(mpi_key.c.record_id).where(mpi_key.c.bkey.in_(keys)).distinct().scalar_subquery()
    rows = conn.execute(
        select(mpi_record).where(
            mpi_record.c.record_id.in_(ids), mpi_record.c.record_id != features.record_id
        )
    ).all()
    best: dict[str, Candidate] = {}
    for row in rows:
        other = features_from_row(row, seal)
        pair: PairScore = score_pair(features, other, model, weights)
        weight, rule = pair.weight, "probabilistic"
        if features.cid is not None and features.cid == other.cid:
            weight, rule = max(weight, model.link_weight), "citizen-id"
        elif (features.cid is not None and other.cid is not None) or not auto_link_allowed(pair.evidence):
            # Two different trusted citizen IDs are two people; differing names need an ID to vouch
            # (twins): such pairs are at most possible matches.
            weight = min(weight, model.link_weight - 0.001)
        resident = row._mapping["resident_id"]
        current = best.get(resident)
        if current is None or weight > current.weight:
            best[resident] = Candidate(
                resident, other.record_id, weight, pair.probability, pair.evidence, rule
            )
    return sorted(best.values(), key=lambda c: (-c.weight, c.resident_id))


def _rejected(conn: Connection, record_id: str) -> set[str]:
    rows = conn.execute(
        select(mpi_review.c.candidate_resident_id).where(
            mpi_review.c.record_id == record_id, mpi_review.c.status == "rejected"
        )
    )
    return {r[0] for r in rows}


@dataclass(frozen=True)
class RecordWrite:
    """One record row to (re)write: sealed features and the link they carry."""

    features: RecordFeatures  # sealed (:meth:`rhip.mpi.protect.MpiSeal.features`)
    resident_id: str
    source: str
    weight: float | None
    updated: float


def write_record(
    conn: Connection,
    features: RecordFeatures,
    resident_id: str,
    source: str,
    weight: float | None,
    now: float,
) -> None:
    """Insert or replace the record row, its blocking keys and its cards (``features`` sealed)."""
    write_records(conn, [RecordWrite(features, resident_id, source, weight, now)])


def write_records(conn: Connection, writes: Sequence[RecordWrite]) -> None:
    """Insert or replace many record rows with their blocking keys and cards, in bulk.

    What :func:`write_record` does for one record, in a fixed number of statements per call
    (deletes by chunks of ids, then one executemany per table) rather than six per record, so a
    re-seal of the whole index (:mod:`rhip.mpi.rekey`) is not bound by statement overhead.
    """
    delete_records(conn, [w.features.record_id for w in writes])
    insert_records(conn, writes)


def insert_records(conn: Connection, writes: Sequence[RecordWrite]) -> None:
    """Insert record rows, blocking keys and cards of records not in the tables (see write_records)."""
    if not writes:
        return
    seal = MpiSeal.of(conn)
    rows: list[dict[str, Any]] = []
    keys: list[tuple[Any, ...]] = []
    cards: list[tuple[Any, ...]] = []
    for w in writes:
        rid = w.features.record_id
        rows.append({**seal.row(w.features), "resident_id": w.resident_id, "link_source": w.source,
                     "link_weight": w.weight, "updated": w.updated})  # fmt: skip
        keys.extend((k, rid) for k in blocking_keys(w.features))
        cards.extend((s, v, rid) for s, v in sorted(set(w.features.cards)))
    columns = list(rows[0])
    bulk_insert(conn, mpi_record, columns, [tuple(r[c] for c in columns) for r in rows])
    bulk_insert(conn, mpi_key, ["bkey", "record_id"], keys)
    bulk_insert(conn, mpi_card, ["system", "value", "record_id"], cards)


def delete_records(conn: Connection, record_ids: Sequence[str]) -> None:
    """Delete records with their blocking keys and cards (ids bound in chunks under SQLite's limit)."""
    for start in range(0, len(record_ids), _ID_CHUNK):
        chunk = list(record_ids[start : start + _ID_CHUNK])
        for t in (mpi_key, mpi_card, mpi_record):
            conn.execute(delete(t).where(t.c.record_id.in_(chunk)))


def _open_reviews(conn: Connection, record_id: str, candidates: list[Candidate], now: float) -> list[int]:
    existing = {
        r[0]
        for r in conn.execute(
            select(mpi_review.c.candidate_resident_id).where(
                mpi_review.c.record_id == record_id, mpi_review.c.status == "open"
            )
        )
    }
    ids: list[int] = []
    for cand in candidates:
        if cand.resident_id in existing:
            continue
        result = conn.execute(
            insert(mpi_review).values(
                record_id=record_id, candidate_resident_id=cand.resident_id, weight=cand.weight,
                probability=cand.probability, evidence=json.dumps(cand.evidence, ensure_ascii=False),
                status="open", created=now,
            )
        )  # fmt: skip
        pk = result.inserted_primary_key
        if pk is not None:
            ids.append(int(pk[0]))
    return ids


def link_features(
    conn: Connection, features: RecordFeatures, model: MatchModel, weights: dict[str, list[float]]
) -> LinkDecision:
    """Decide and write the link of one record inside the caller's transaction (locks taken here).

    ``features`` must be sealed with the store's keys (:meth:`rhip.mpi.protect.MpiSeal.features`).
    """
    now = time.time()
    lock_keys(conn, [*blocking_keys(features), f"r:{features.record_id}"])
    existing = conn.execute(
        select(mpi_record.c.resident_id, mpi_record.c.link_source).where(
            mpi_record.c.record_id == features.record_id
        )
    ).first()
    candidates = find_candidates(conn, features, model, weights)
    if existing is not None and existing.link_source == "manual":
        write_record(conn, features, existing.resident_id, "manual", None, now)
        return LinkDecision(
            features.record_id, existing.resident_id, "unchanged", "manual", candidates=candidates
        )
    rejected = _rejected(conn, features.record_id)
    eligible = [c for c in candidates if c.resident_id not in rejected]
    previous = existing.resident_id if existing is not None else None
    best = eligible[0] if eligible else None
    if best is not None and best.weight >= model.link_weight:
        outcome = "unchanged" if best.resident_id == previous else "link"
        write_record(conn, features, best.resident_id, best.rule, best.weight, now)
        return LinkDecision(
            features.record_id, best.resident_id, outcome, best.rule, best.weight, best.probability,
            candidates, previous_resident_id=previous if previous != best.resident_id else None,
        )  # fmt: skip
    possible = [c for c in eligible if c.weight >= model.review_weight]
    stays = previous is not None and not any(c.resident_id == previous for c in possible)
    resident = (
        previous if stays and previous is not None and _alone(conn, previous, features.record_id) else None
    )
    if resident is None:
        resident = new_resident(conn, now)
    write_record(conn, features, resident, "new", None, now)
    review_ids = _open_reviews(conn, features.record_id, possible, now)
    if possible:
        outcome, rule = "review", "probabilistic"
    else:
        outcome, rule = ("unchanged" if resident == previous else "new"), "new"
    return LinkDecision(
        features.record_id, resident, outcome, rule,
        best.weight if best else None, best.probability if best else None,
        candidates, review_ids, previous if previous not in (None, resident) else None,
    )  # fmt: skip


def _alone(conn: Connection, resident_id: str, record_id: str) -> bool:
    """True when the record is the only one of its resident (so the resident can be kept)."""
    other = conn.execute(
        select(mpi_record.c.record_id)
        .where(mpi_record.c.resident_id == resident_id, mpi_record.c.record_id != record_id)
        .limit(1)
    ).first()
    return other is None
