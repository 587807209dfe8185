"""``rhip keys reencrypt`` for the MPI: its rows moved to the newest SM4 and HMAC keys.

The MPI's tables hold HMAC-SM3 pseudonyms and SM4 tokens of citizen IDs and phones
(:mod:`rhip.mpi.protect`), under the store's key ring. After ``rhip keys rotate``:

* a row whose ``key_version`` is not the current HMAC version is sealed again from its source
  Patient by the code a real-time link uses (features extracted and sealed, then row, blocking
  keys and cards written by :func:`rhip.mpi.link.write_records`), keeping its resident, link
  source, weight and time: a key change is not a matching decision, so no link moves;
* a row whose pseudonyms are current but whose SM4 tokens are not gets just those tokens
  re-encrypted, with the same associated data.

Rows are taken in keyset pages by record id (:data:`DEFAULT_BATCH_SIZE` by default); the
Patients of a page are read and sealed outside any write transaction, then the page is written
in bulk in one transaction, so a run stopped at any moment leaves every page either done or as
it was, and running it again finishes the job without redoing anything: what is done is under
the newest keys, and a page with nothing to do is passed over without a write transaction.
:func:`mpi_key_usage` counts the key versions rows still use, for ``rhip keys status``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, bindparam, func, select, update

from rhip.errors import InvalidRequest
from rhip.mpi.features import RecordFeatures, extract_features
from rhip.mpi.link import RecordWrite, lock_keys, write_records
from rhip.mpi.protect import MpiSeal, sm4_versions
from rhip.mpi.schema import mpi_record
from rhip.mpi.service import ready
from rhip.store.engine import read_connection, write_transaction
from rhip.store.schema import resource, resource_version

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from rhip.security.rotation import KeyUsage
    from rhip.store.store import Store

#: Rows per page, and so per write transaction: large enough that statement and commit costs
#: vanish, small enough that a real-time link waits well under a second for the write lock.
DEFAULT_BATCH_SIZE = 2000
#: Record ids bound per ``IN`` list when reading source Patients.
_ID_CHUNK = 500
#: What a page is read with: enough to tell that a row needs nothing.
_PAGE_COLUMNS = [mpi_record.c[name] for name in ("record_id", "key_version", "cid_raw", "phone_sm4")]
#: One row's SM4 tokens replaced (executemany over the rows of a page).
_RENEW_TOKENS = (
    update(mpi_record)
    .where(mpi_record.c.record_id == bindparam("rid"))
    .values(cid_raw=bindparam("cid_token"), phone_sm4=bindparam("phone_token"))
)


@dataclass
class MpiReencryptResult:
    """What a re-encryption of the MPI did to its rows."""

    resealed: int = 0  # rewritten from the source Patient under the newest HMAC (and SM4) key
    reencrypted: int = 0  # SM4 tokens alone moved to the newest key
    skipped: int = 0  # already under the newest keys
    missing: int = 0  # no body of the source Patient in the store: left as it is

    @property
    def total(self) -> int:
        """Rows examined."""
        return self.resealed + self.reencrypted + self.skipped + self.missing

    def add(self, other: MpiReencryptResult) -> None:
        """Count another page's rows in."""
        self.resealed += other.resealed
        self.reencrypted += other.reencrypted
        self.skipped += other.skipped
        self.missing += other.missing


@dataclass
class _PagePlan:
    """The writes of one page, decided from its rows as read inside the write transaction."""

    writes: list[RecordWrite] = field(default_factory=list)
    tokens: list[dict[str, Any]] = field(default_factory=list)
    counts: MpiReencryptResult = field(default_factory=MpiReencryptResult)


def rows_to_examine(engine: Engine) -> int:
    """How many MPI rows :func:`reencrypt_mpi` will look at (for a progress bar)."""
    ready(engine)
    with read_connection(engine) as conn:
        return int(conn.execute(select(func.count()).select_from(mpi_record)).scalar_one())


def reencrypt_mpi(
    store: Store,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_rows: Callable[[int], None] | None = None,
) -> MpiReencryptResult:
    """Move every MPI row to the newest SM4 and HMAC keys (see the module docstring).

    ``batch_size`` rows are examined per page and written in one transaction; ``on_rows`` hears
    of each page once it is committed (or passed over). An engine without keys (no store opened
    it) has nothing to move. Raises InvalidRequest when ``batch_size`` is below 1.
    """
    if batch_size < 1:
        raise InvalidRequest("reencrypt: batch_size must be at least 1")
    ready(store.engine)
    seal = MpiSeal.of(store.engine)
    result = MpiReencryptResult()
    if seal.cipher is None:
        return result
    after = ""
    while page := _page(store.engine, after, batch_size):
        result.add(_rewrite_page(store, seal, page))
        after = str(page[-1].record_id)
        if on_rows is not None:
            on_rows(len(page))
    return result


def _page(engine: Engine, after: str, size: int) -> Sequence[Any]:
    """The next ``size`` rows after record id ``after`` (keyset pagination: no OFFSET to rescan)."""
    with read_connection(engine) as conn:
        key = mpi_record.c.record_id
        return conn.execute(select(*_PAGE_COLUMNS).where(key > after).order_by(key).limit(size)).all()


def _rewrite_page(store: Store, seal: MpiSeal, page: Sequence[Any]) -> MpiReencryptResult:
    """One transaction: stale rows re-sealed from their Patients, old SM4 tokens re-encrypted.

    Reading and sealing the Patients happens before the transaction, so the write lock is held
    only while the page is read again and written in bulk. Each re-sealed record's ``r:`` lock is
    held (as a real-time link of it takes it) and the rows are read again under it: a row a
    real-time link rewrote meanwhile is under the newest key and is left alone, a record linked
    again later finds the new row.
    """
    stale = [str(r.record_id) for r in page if r.key_version != seal.version]
    if not stale and not any(seal.tokens_stale(r._mapping) for r in page):
        return MpiReencryptResult(skipped=len(page))
    patients = _source_patients(store, stale)
    sealed = {rid: seal.features(extract_features(body)) for rid, body in patients.items()}
    ids = {str(r.record_id) for r in page}
    span = mpi_record.c.record_id.between(page[0].record_id, page[-1].record_id)
    with write_transaction(store.engine) as conn:
        lock_keys(conn, [f"r:{rid}" for rid in stale])
        rows = [r._mapping for r in conn.execute(select(mpi_record).where(span)) if r.record_id in ids]
        plan = _plan(rows, seal, sealed)
        write_records(conn, plan.writes)
        _renew_tokens(conn, plan.tokens)
    return plan.counts


def _plan(rows: Sequence[Mapping[Any, Any]], seal: MpiSeal, sealed: dict[str, RecordFeatures]) -> _PagePlan:
    """What each row of a page needs: a re-seal (link kept), new SM4 tokens, or nothing."""
    plan = _PagePlan()
    for row in rows:
        record_id = str(row["record_id"])
        if row["key_version"] != seal.version:
            features = sealed.get(record_id)
            if features is None:
                plan.counts.missing += 1
                continue
            link = (row["resident_id"], row["link_source"], row["link_weight"], row["updated"])
            plan.writes.append(RecordWrite(features, *link))  # the link and its time stay
            plan.counts.resealed += 1
        elif renewed := seal.renewed_tokens(row):
            cid, phone = (renewed.get(c, row[c]) for c in ("cid_raw", "phone_sm4"))
            plan.tokens.append({"rid": record_id, "cid_token": cid, "phone_token": phone})
            plan.counts.reencrypted += 1
        else:
            plan.counts.skipped += 1
    return plan


def _renew_tokens(conn: Connection, params: list[dict[str, Any]]) -> None:
    if params:
        conn.execute(_RENEW_TOKENS, params)


def _source_patients(store: Store, record_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The plaintext source Patient of each record: its current body, else its last live version.

    A deleted Patient keeps its MPI row, so its last version before the delete seals it again.
    """
    bodies: dict[str, Any] = {}
    for start in range(0, len(record_ids), _ID_CHUNK):
        bodies.update(_bodies(store.engine, record_ids[start : start + _ID_CHUNK]))
    return {str(rid): store.fields.loads(bytes(body)) for rid, body in bodies.items()}


def _bodies(engine: Engine, record_ids: list[str]) -> dict[str, Any]:
    """Stored bodies of a chunk of record ids: the current one, else the last live version."""
    live = (resource.c.res_type == "Patient", resource.c.deleted.is_(False))
    with read_connection(engine) as conn:
        bodies = dict(
            conn.execute(
                select(resource.c.res_id, resource.c.body).where(*live, resource.c.res_id.in_(record_ids))
            ).all()
        )
        gone = [rid for rid in record_ids if rid not in bodies]
        if gone:
            versions = resource_version.c
            for res_id, body in conn.execute(
                select(versions.res_id, versions.body)
                .where(versions.res_type == "Patient", versions.deleted.is_(False), versions.res_id.in_(gone))
                .order_by(versions.res_id, versions.version_id)
            ):
                bodies[res_id] = body  # the last live version wins
    return bodies


def mpi_key_usage(engine: Engine, usage: KeyUsage) -> None:
    """Count into ``usage`` (place ``mpi``) the HMAC and SM4 key versions every MPI row uses.

    A row's HMAC version is its ``key_version`` (None: sealed without keys, or cleared by revision
    0006); its SM4 versions are those its tokens name (None: a value in clear).
    """
    stmt = select(mpi_record.c.key_version, mpi_record.c.cid_raw, mpi_record.c.phone_sm4)
    with read_connection(engine) as conn:
        for row in conn.execution_options(stream_results=True, yield_per=5000).execute(stmt):
            usage.add("hmac", "mpi", {row.key_version})
            usage.add("sm4", "mpi", sm4_versions(row._mapping))
