"""``rhip link --all``: re-link every source Patient in the store in one batch and rewrite the index.

Reads all source Patients, optionally re-trains the model, runs the Splink batch
(:mod:`rhip.mpi.batch`), keeps resident ids and manual links where it can, rewrites the MPI tables
in one transaction, queues the review-band pairs and refreshes the golden Patients.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from rhip.mpi.batch import BatchResult, FeatureTable, assign_residents, collect_features, link_all, train
from rhip.mpi.features import RecordFeatures
from rhip.mpi.golden import StoreLike, golden_bodies, iter_golden
from rhip.mpi.link import RecordWrite, delete_records, insert_records, new_vhc
from rhip.mpi.model import MatchModel, score_pair
from rhip.mpi.protect import MpiSeal
from rhip.mpi.schema import mpi_change, mpi_record, mpi_resident, mpi_review
from rhip.mpi.service import current_model, model_path, ready, reset_model_cache

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (phase, done, total)
_CHUNK = 5000


@dataclass
class RelinkReport:
    """What a batch re-link did, with timings per phase (seconds)."""

    records: int = 0
    residents: int = 0
    new_residents: int = 0
    review_items: int = 0
    scored_pairs: int = 0
    link_pairs: int = 0
    model: str = ""
    seconds: dict[str, float] = field(default_factory=dict)


def _patients(store: StoreLike) -> Iterator[dict[str, Any]]:
    for body, _id, _updated, _deleted in store.iter_current("Patient"):
        if body is not None:
            yield body


def _write_links(
    conn: Connection,
    table: FeatureTable,
    assignment: dict[str, str],
    existing: dict[str, tuple[str, str]],
    now: float,
    stale: set[str],
) -> set[str]:
    """New records get their row, keys and cards; known ones only a changed link; gone ones leave.

    Known records in ``stale`` (sealed under another HMAC key version, or before revision 0006)
    are written again in full, keeping their link source unless their resident changes.
    Returns the residents whose set of records changed (their golden Patients need rewriting).
    """
    present = set(table.columns["unique_id"])
    gone = [rid for rid in existing if rid not in present]
    touched = {existing[rid][0] for rid in gone}
    delete_records(conn, [*gone, *(rid for rid in stale if rid in present)])
    writes: list[RecordWrite] = []
    moved: list[dict[str, Any]] = []
    for feats in table.features:
        rid, resident = feats.record_id, assignment[feats.record_id]
        before = existing.get(rid)
        if before is not None and before[0] != resident:
            touched.update((before[0], resident))
        if before is not None and rid not in stale:
            if before[0] != resident:
                moved.append({"rid": rid, "res": resident, "now": now})
            continue
        touched.add(resident)
        source = before[1] if before is not None and before[0] == resident else "batch"
        writes.append(RecordWrite(feats, resident, source, None, now))
    insert_records(conn, writes)
    if moved:
        stmt = (
            update(mpi_record)
            .where(mpi_record.c.record_id == bindparam("rid"))
            .values(resident_id=bindparam("res"), link_source="batch", updated=bindparam("now"))
        )
        for start in range(0, len(moved), _CHUNK):
            conn.execute(stmt, moved[start : start + _CHUNK])
    return touched


def _new_residents(
    conn: Connection, clusters: dict[str, int], assignment: dict[str, str], fresh: set[int], now: float
) -> int:
    ids: dict[int, str] = {}
    rows = []
    for record_id, cluster in clusters.items():
        if cluster in fresh and not assignment[record_id]:
            if cluster not in ids:
                ids[cluster] = secrets.token_hex(16)
                rows.append(
                    {
                        "resident_id": ids[cluster],
                        "vhc": new_vhc(),
                        "status": "active",
                        "created": now,
                        "updated": now,
                    }
                )
            assignment[record_id] = ids[cluster]
    for start in range(0, len(rows), _CHUNK):
        conn.execute(insert(mpi_resident), rows[start : start + _CHUNK])
    return len(rows)


def _reviews(
    conn: Connection,
    table: FeatureTable,
    pairs: list[tuple[str, str, float, float]],
    assignment: dict[str, str],
    model: MatchModel,
    now: float,
) -> int:
    conn.execute(
        update(mpi_review).where(mpi_review.c.status == "open").values(status="closed", resolved=now)
    )
    by_id: dict[str, RecordFeatures] = {f.record_id: f for f in table.features}
    weights = model.level_weights()
    seen: set[tuple[str, str]] = set()
    rows = []
    for left, right, weight, probability in pairs:
        if assignment[left] == assignment[right] or (left, assignment[right]) in seen:
            continue
        seen.add((left, assignment[right]))
        evidence = score_pair(by_id[left], by_id[right], model, weights).evidence
        rows.append({
            "record_id": left, "candidate_resident_id": assignment[right], "weight": weight,
            "probability": probability, "evidence": json.dumps(evidence, ensure_ascii=False),
            "status": "open", "created": now,
        })  # fmt: skip
    for start in range(0, len(rows), _CHUNK):
        conn.execute(insert(mpi_review), rows[start : start + _CHUNK])
    return len(rows)


def relink_all(
    store: StoreLike,
    *,
    retrain: bool = False,
    backend: str = "duckdb",
    spark: Any | None = None,
    golden: bool = True,
    model: MatchModel | None = None,
    actor: str = "rhip link --all",
    max_pairs: float = 5e6,
) -> RelinkReport:
    """Re-link every source Patient in the store (see the module docstring).

    Args:
        retrain: estimate the model's parameters on these records first and save them as the
            installation's model (``<data_dir>/mpi/model.json``).
        backend: ``duckdb`` (default) or ``spark`` (needs ``spark``, a SparkSession).
        golden: rewrite the golden Patients (off only for measurements of the linkage itself).
        max_pairs: record pairs sampled for u estimation and EM when retraining.
    """  # fmt: skip
    ready(store.engine)
    report, clock = RelinkReport(), time.perf_counter()
    table = collect_features(_patients(store), MpiSeal.of(store.engine))
    report.records, report.seconds["read"] = len(table), round(time.perf_counter() - clock, 2)
    model = model or current_model()[0]
    if retrain and len(table) > 1:
        clock = time.perf_counter()
        model = _retrain(table, model, backend, spark, max_pairs)
        report.seconds["train"] = round(time.perf_counter() - clock, 2)
    report.model = model.trained_on
    result = link_all(table, model, backend=backend, spark=spark)
    report.seconds.update(result.seconds)
    report.scored_pairs, report.link_pairs = result.scored_pairs, result.link_pairs
    clock = time.perf_counter()
    changed = _apply(store, table, result, model, actor, report)
    report.seconds["write"] = round(time.perf_counter() - clock, 2)
    if golden:
        clock = time.perf_counter()
        _write_golden(store, changed)
        report.seconds["golden"] = round(time.perf_counter() - clock, 2)
    return report


def _retrain(
    table: FeatureTable, model: MatchModel, backend: str, spark: Any | None, max_pairs: float
) -> MatchModel:
    """Train on these records and make the result the installation's model."""
    trained = train(table, model, backend=backend, spark=spark, max_pairs=max_pairs)
    path = model_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(trained.to_json(), encoding="utf-8")
    reset_model_cache()
    return trained


def _apply(
    store: StoreLike,
    table: FeatureTable,
    result: BatchResult,
    model: MatchModel,
    actor: str,
    report: RelinkReport,
) -> set[str]:
    """Rewrite the link table in one transaction; returns residents whose golden must be rewritten."""
    from rhip.store.engine import write_transaction

    now = time.time()
    with write_transaction(store.engine) as conn:
        version = MpiSeal.of(conn).version
        rows = conn.execute(select(mpi_record.c.record_id, mpi_record.c.resident_id,
                                   mpi_record.c.link_source, mpi_record.c.key_version)).all()  # fmt: skip
        existing = {r.record_id: (r.resident_id, r.link_source) for r in rows}
        stale = {r.record_id for r in rows if r.key_version != version}
        assignment, fresh = assign_residents(result.clusters, existing)
        report.new_residents = _new_residents(conn, result.clusters, assignment, fresh, now)
        touched = _write_links(conn, table, assignment, existing, now, stale)
        gone = {r for r, _ in existing.values()} - set(assignment.values())
        for rid in sorted(gone):
            conn.execute(
                update(mpi_resident)
                .where(mpi_resident.c.resident_id == rid, mpi_resident.c.status == "active")
                .values(status="retired", updated=now)
            )
        report.review_items = _reviews(conn, table, result.review_pairs, assignment, model, now)
        summary = {"records": report.records, "new_residents": report.new_residents, "retired": len(gone),
                   "model": report.model}  # fmt: skip
        conn.execute(
            insert(mpi_change).values(action="relink", actor=actor, at=now, details=json.dumps(summary))
        )
    report.residents = len(set(assignment.values()))
    return touched | gone


def _write_golden(store: StoreLike, resident_ids: set[str]) -> None:
    if len(resident_ids) < 2000:
        with store.engine.connect() as conn:
            bodies = golden_bodies(conn, resident_ids)
        store.bulk_write(bodies)
        return
    with store.engine.connect() as conn:
        batch: list[dict[str, Any]] = []
        for body in iter_golden(conn, resident_ids):
            batch.append(body)
            if len(batch) >= 20_000:
                store.bulk_write(batch)
                batch = []
    store.bulk_write(batch)
