"""The audit trail (留痕可溯): an append-only log whose entries are hash-chained with SM3.

Every entry's hash is SM3(previous hash || canonical JSON of the entry), so editing or deleting any
row breaks the chain from that row on; :func:`verify_chain` finds the first broken entry. Requests
never write the log themselves: they put events on a queue that one writer thread drains in
batches (the chain order is the writer's order), so auditing does not serialise the API.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa

from rhip.security.crypto import sm3_hex
from rhip.security.schema import GENESIS, audit_head, audit_log, audit_patient, ensure_schema
from rhip.store.engine import StoreBusy, bulk_insert, is_sqlite, param_mark, write_transaction
from rhip.store.meta import ID_RE

logger = logging.getLogger(__name__)

#: The columns of an ``audit_log`` row, in the order :func:`append` builds them.
_LOG_COLUMNS = ["seq", "recorded", "entry", "prev_hash", "hash"]


#: The text fields of a record, in an entry when not None (see :meth:`AuditRecord.to_entry`).
_TEXT_FIELDS = ("actor", "role", "action", "outcome", "purpose", "source", "request_id", "path", "detail")


@dataclass
class AuditRecord:
    """One event: who did what to which residents' records, why, and the outcome."""

    actor: str
    role: str
    action: str  # interaction (read, search-type, login, ...)
    outcome: str  # "0" success, "4" minor failure / denial, "8" serious failure
    entities: list[str] = field(default_factory=list)  # "Type/id"
    patients: list[str] = field(default_factory=list)
    purpose: str = "TREAT"
    source: str | None = None
    request_id: str | None = None
    path: str | None = None
    break_glass: bool = False
    detail: str | None = None
    recorded: float = field(default_factory=time.time)

    def to_entry(self) -> dict[str, Any]:
        """The canonical dict that is hashed (patients sorted, no absent keys).

        Built field by field rather than from ``__dict__`` with a test of every value: this runs
        once per audited request, in the writer thread, and the result must stay byte-identical
        (entries already on a chain are re-hashed from their stored text, not from this).
        """
        data: dict[str, Any] = {"entities": self.entities[:200], "patients": sorted(set(self.patients))}
        for key in _TEXT_FIELDS:
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        if self.break_glass:
            data["break_glass"] = True
        if self.recorded:
            data["recorded"] = self.recorded
        return data


def canonical(entry: dict[str, Any]) -> bytes:
    """Canonical bytes of an entry: sorted keys, compact UTF-8 JSON."""
    return orjson.dumps(entry, option=orjson.OPT_SORT_KEYS)


def chain_hash(prev_hash: str, entry_text: str) -> str:
    """SM3(prev_hash || entry), both as they are stored."""
    return sm3_hex(prev_hash.encode("ascii") + entry_text.encode("utf-8"))


def _indexable_patients(patients: list[str]) -> list[str]:
    """The patient ids worth a row in ``audit_patient``.

    A request can name a "patient" no resident can be (``GET Patient/\\u0000`` in a batch): the
    entry keeps it, escaped in its JSON, but a NUL in the varchar column is refused by PostgreSQL,
    which lost the whole batch of events and stopped the writer.
    """
    return [p for p in patients if ID_RE.fullmatch(p)]  # a FHIR id, as the store checks it


def append(conn: sa.Connection, records: list[AuditRecord]) -> int:
    """Append records to the chain inside the caller's transaction; returns the last sequence number.

    The head is read under the write lock (``FOR UPDATE``; SQLite's ``BEGIN IMMEDIATE``) by every
    call, so appends from the CLI or another server process chain on the same head. The rows go
    in as positional tuples (:func:`bulk_insert`), not dicts through Core, which cost a few
    microseconds per row in parameter processing.
    """
    seq, prev = _locked_head(conn)
    rows: list[tuple[Any, ...]] = []
    patient_rows: list[tuple[Any, ...]] = []
    for record in records:
        seq += 1
        entry = record.to_entry()
        text = canonical(entry).decode("utf-8")
        digest = chain_hash(prev, text)
        rows.append((seq, record.recorded, text, prev, digest))
        patient_rows.extend((p, seq) for p in _indexable_patients(entry["patients"]))
        prev = digest
    if rows:
        bulk_insert(conn, audit_log, _LOG_COLUMNS, rows)
        bulk_insert(conn, audit_patient, ["patient_id", "seq"], patient_rows)
        mark = param_mark(conn)
        conn.exec_driver_sql(f"UPDATE audit_head SET seq = {mark}, hash = {mark} WHERE id = 1", (seq, prev))
    return seq


def _locked_head(conn: sa.Connection) -> tuple[int, str]:
    """(seq, hash) of the chain head, locked until the transaction ends.

    Plain SQL: built through Core, this statement and the head's update cost ≈ 0.3 ms each per
    batch (statement, cache key, compiled-cache look-up), as much as the rows of a batch of 40.
    SQLite has no ``FOR UPDATE``; its writer holds the database lock from ``BEGIN IMMEDIATE``.
    """
    lock = "" if is_sqlite(conn) else " FOR UPDATE"
    seq, digest = conn.exec_driver_sql(f"SELECT seq, hash FROM audit_head WHERE id = 1{lock}").one()
    return int(seq), str(digest)


def operator_record(action: str, detail: str) -> AuditRecord:
    """An operator's command (account, key or backup change) as an audit record; actor: the OS user."""
    import getpass

    return AuditRecord(
        actor=f"os:{getpass.getuser()}",
        role="operator",
        action=action,
        outcome="0",
        purpose="HSYSADMIN",
        detail=detail,
    )


def record_now(engine: sa.Engine, record: AuditRecord) -> None:
    """Append one record synchronously (for the CLI: account and key changes)."""
    ensure_schema(engine)
    with write_transaction(engine) as conn:
        append(conn, [record])


#: The detail of a stand-in record (see :func:`_stand_in`).
_STAND_IN_DETAIL = "the original audit record held a value the database refused; printable ASCII kept"


def _printable(value: str | None) -> str | None:
    """``value`` with everything but printable ASCII replaced by ``?`` (for a stand-in record)."""
    if value is None:
        return None
    return "".join(c if " " <= c <= "~" else "?" for c in value)[:512]


def _stand_in(record: AuditRecord) -> AuditRecord:
    """The same event with its text reduced to printable ASCII, for a record the database refused.

    Who did what, when and with which outcome is kept; a value the database could not hold (a NUL,
    an unpaired surrogate) is not, and the detail says so.
    """
    return AuditRecord(
        actor=_printable(record.actor) or "?",
        role=_printable(record.role) or "?",
        action=_printable(record.action) or "?",
        outcome=_printable(record.outcome) or "?",
        entities=[str(_printable(e)) for e in record.entities[:200]],
        patients=[str(_printable(p)) for p in record.patients],
        purpose=_printable(record.purpose) or "?",
        source=_printable(record.source),
        request_id=_printable(record.request_id),
        path=_printable(record.path),
        break_glass=record.break_glass,
        detail=_STAND_IN_DETAIL,
        recorded=record.recorded,
    )


class AuditWriter:
    """Queue + writer thread: ``submit`` never blocks on the database; ``flush`` waits for the queue."""

    def __init__(self, engine: sa.Engine, *, batch: int = 500, linger: float = 0.05) -> None:
        ensure_schema(engine)
        self.engine = engine
        self.batch = batch
        self.linger = linger
        self._queue: queue.Queue[AuditRecord | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="rhip-audit-writer", daemon=True)
        self._stopped = False
        self._thread.start()

    def submit(self, record: AuditRecord) -> None:
        """Queue one record for the chain."""
        self._queue.put(record)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every submitted record is on the chain."""
        done = threading.Event()
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            done.wait(0.005)

    @property
    def alive(self) -> bool:
        """Whether the writer thread still takes records (readiness: ``GET /ready``)."""
        return not self._stopped and self._thread.is_alive()

    def close(self) -> None:
        """Flush and stop the writer thread."""
        if self._stopped:
            return
        self._stopped = True
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _drain(self, first: AuditRecord) -> tuple[list[AuditRecord], bool]:
        """Collect a batch: what is queued ``linger`` seconds after ``first``, up to ``batch`` records.

        The thread sleeps through the linger, then takes what is there without waiting. Waiting
        on the queue with a timeout instead woke this thread for every record submitted, taking
        the GIL from the event loop each time; a backlog of a full batch is taken at once.
        """
        if self._queue.qsize() < self.batch - 1:
            time.sleep(self.linger)
        batch, stop = [first], False
        while len(batch) < self.batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                stop = True
                self._queue.task_done()
                break
            batch.append(item)
        return batch, stop

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                self._queue.task_done()
                return
            batch, stop = self._drain(item)
            try:
                self._write(batch)
            except Exception:  # the writer thread must outlive any one batch
                logger.exception("audit write failed; %d events lost", len(batch))
            for _ in batch:
                self._queue.task_done()
            if stop:
                return

    def _write(self, batch: list[AuditRecord]) -> None:
        """Append a batch, retrying while the database is busy.

        Any other failure is a record the database will not take (a value it cannot hold): the
        batch is then written one record at a time, and a record that still fails is replaced by
        :func:`_stand_in`, so one bad record neither stops the writer thread nor loses its batch.
        """
        for attempt in range(5):
            try:
                with write_transaction(self.engine) as conn:
                    append(conn, batch)
                return
            except (sa.exc.OperationalError, StoreBusy):
                logger.warning("audit write failed (attempt %d), retrying", attempt + 1)
                time.sleep(0.05 * (attempt + 1))
            except Exception:
                if len(batch) > 1:
                    for record in batch:
                        self._write([record])
                    return
                logger.exception("audit record refused as given; writing a stand-in")
                if batch[0].detail != _STAND_IN_DETAIL:
                    self._write([_stand_in(batch[0])])
                    return
                break
        logger.error("audit write failed; %d events lost", len(batch))


@dataclass
class VerifyReport:
    """Result of :func:`verify_chain`: ``first_bad`` is the first tampered sequence number."""

    checked: int
    ok: bool
    first_bad: int | None = None
    reason: str | None = None
    #: SM3 hash of the last entry of an intact chain: what an operator copies to another system,
    #: since only an outside copy catches a chain rewritten whole (docs/security.md)
    head_hash: str | None = None


def verify_chain(engine: sa.Engine) -> VerifyReport:
    """Walk the chain in order and report the first entry whose hash or link does not hold."""
    ensure_schema(engine)
    with engine.connect() as conn:
        return walk_chain(conn)


def walk_chain(conn: sa.Connection) -> VerifyReport:
    """:func:`verify_chain` on a database as it is, never migrated first.

    A backup's snapshot is checked at the schema revision it was taken at (``rhip backup verify``).
    """
    prev, expected_seq, checked = GENESIS, 1, 0
    head = conn.execute(sa.select(audit_head.c.seq, audit_head.c.hash)).one()
    rows = conn.execute(sa.select(audit_log).order_by(audit_log.c.seq)).mappings()
    for row in rows:
        if row["seq"] != expected_seq:
            return VerifyReport(checked, False, expected_seq, "entry missing (deleted)")
        if row["prev_hash"] != prev:
            return VerifyReport(checked, False, row["seq"], "link to previous entry broken")
        if chain_hash(prev, row["entry"]) != row["hash"]:
            return VerifyReport(checked, False, row["seq"], "entry content altered")
        prev, expected_seq, checked = row["hash"], expected_seq + 1, checked + 1
    if head.seq != checked or head.hash != prev:
        return VerifyReport(checked, False, checked + 1, "chain truncated: head names a later entry")
    return VerifyReport(checked, True, head_hash=prev)


def chain_head(engine: sa.Engine) -> tuple[int, str]:
    """(seq, hash) of the chain head: how many events were appended, and the hash to compare."""
    ensure_schema(engine)
    with engine.connect() as conn:
        head = conn.execute(sa.select(audit_head.c.seq, audit_head.c.hash)).one()
    return int(head.seq), str(head.hash)


def events_for_patient(
    engine: sa.Engine, patient_id: str | Collection[str], *, count: int = 50, offset: int = 0
) -> tuple[int, list[tuple[int, dict[str, Any]]]]:
    """(total, [(seq, entry)]) of the audit entries concerning a resident, newest first.

    ``patient_id`` may be several Patient ids (a resident's records at several facilities); an
    entry naming more than one of them counts once.
    """
    ids = [patient_id] if isinstance(patient_id, str) else sorted(set(patient_id))
    seqs = sa.select(audit_patient.c.seq).where(audit_patient.c.patient_id.in_(ids)).distinct()
    with engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(seqs.subquery())).scalar_one()
        stmt = (
            sa.select(audit_log.c.seq, audit_log.c.entry)
            .where(audit_log.c.seq.in_(seqs))
            .order_by(audit_log.c.seq.desc())
            .limit(count)
            .offset(offset)
        )
        rows = [(int(r.seq), orjson.loads(r.entry)) for r in conn.execute(stmt)]
    return int(total), rows


def iter_entries(
    engine: sa.Engine, *, break_glass_only: bool = False
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Every entry in chain order (optionally only break-the-glass ones, for review)."""
    with engine.connect() as conn:
        for row in conn.execute(sa.select(audit_log.c.seq, audit_log.c.entry).order_by(audit_log.c.seq)):
            entry = orjson.loads(row.entry)
            if break_glass_only and not entry.get("break_glass"):
                continue
            yield int(row.seq), entry
