"""``rhip keys reencrypt`` for the MPI: its rows moved to the newest SM4 and HMAC keys.

The MPI's tables hold HMAC-SM3 pseudonyms and SM4 tokens of citizen IDs and phones
(:mod:`rhip.mpi.protect`), under the store's key ring. After ``rhip keys rotate``:

* a row whose ``key_version`` is not the current HMAC version is sealed again from its source
  Patient by the code a real-time link uses (features extracted and sealed, then row, blocking
  keys and cards written by :func:`rhip.mpi.link.write_record`), keeping its resident, link
  source, weight and time: a key change is not a matching decision, so no link moves;
* a row whose pseudonyms are current but whose SM4 tokens are not gets just those tokens
  re-encrypted, with the same associated data.

Rows are taken in pages by record id, one transaction each, so a run stopped half-way is
finished by running it again and nothing done is redone. :func:`mpi_key_usage` counts the key
versions rows still use, for ``rhip keys status``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, func, select, update

from rhip.mpi.features import RecordFeatures, extract_features
from rhip.mpi.link import lock_keys, write_record
from rhip.mpi.protect import MpiSeal, sm4_versions
from rhip.mpi.schema import mpi_record
from rhip.mpi.service import ready
from rhip.store.engine import read_connection, write_transaction
from rhip.store.schema import resource, resource_version

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from rhip.security.rotation import KeyUsage
    from rhip.store.store import Store


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


def rows_to_examine(engine: Engine) -> int:
    """How many MPI rows :func:`reencrypt_mpi` will look at (for a progress bar)."""
    ready(engine)
    with read_connection(engine) as conn:
        return int(conn.execute(select(func.count()).select_from(mpi_record)).scalar_one())


def reencrypt_mpi(
    store: Store, *, batch_size: int = 500, on_rows: Callable[[int], None] | None = None
) -> MpiReencryptResult:
    """Move every MPI row to the newest SM4 and HMAC keys (see the module docstring).

    ``on_rows`` hears of each page of rows once its transaction is committed. An engine without
    keys (no store opened it) has nothing to move.
    """
    ready(store.engine)
    seal = MpiSeal.of(store.engine)
    result = MpiReencryptResult()
    if seal.cipher is None:
        return result
    after = ""
    while True:
        with read_connection(store.engine) as conn:
            page = conn.execute(
                select(mpi_record.c.record_id, mpi_record.c.key_version)
                .where(mpi_record.c.record_id > after)
                .order_by(mpi_record.c.record_id)
                .limit(batch_size)
            ).all()
        if not page:
            return result
        _rewrite_page(store, seal, page, result)
        after = str(page[-1].record_id)
        if on_rows is not None:
            on_rows(len(page))


def _rewrite_page(store: Store, seal: MpiSeal, page: Sequence[Any], result: MpiReencryptResult) -> None:
    """One transaction: stale rows re-sealed from their Patients, old SM4 tokens re-encrypted.

    Each re-sealed record's ``r:`` lock is held (as a real-time link of it takes it), so a record
    arriving again meanwhile is linked after this page, from the rewritten row.
    """
    newest = seal.version
    stale = [str(r.record_id) for r in page if r.key_version != newest]
    patients = _source_patients(store, stale)
    sealed = {rid: seal.features(extract_features(body)) for rid, body in patients.items()}
    with write_transaction(store.engine) as conn:
        lock_keys(conn, [f"r:{rid}" for rid in stale])
        rows = conn.execute(
            select(mpi_record).where(mpi_record.c.record_id.in_([r.record_id for r in page]))
        ).all()
        for row in rows:
            _rewrite_row(conn, seal, row._mapping, sealed, result)


def _rewrite_row(
    conn: Connection,
    seal: MpiSeal,
    row: Any,
    sealed: dict[str, RecordFeatures],
    result: MpiReencryptResult,
) -> None:
    record_id = str(row["record_id"])
    if row["key_version"] != seal.version:
        features = sealed.get(record_id)
        if features is None:
            result.missing += 1
            return
        link = (row["resident_id"], row["link_source"], row["link_weight"])
        write_record(conn, features, *link, row["updated"])  # the link and its time stay
        result.resealed += 1
        return
    renewed = seal.renewed_tokens(row)
    if not renewed:
        result.skipped += 1
        return
    conn.execute(update(mpi_record).where(mpi_record.c.record_id == record_id).values(**renewed))
    result.reencrypted += 1


def _source_patients(store: Store, record_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The plaintext source Patient of each record: its current body, else its last live version.

    A deleted Patient keeps its MPI row, so its last version before the delete seals it again.
    """
    if not record_ids:
        return {}
    live = (resource.c.res_type == "Patient", resource.c.deleted.is_(False))
    with read_connection(store.engine) as conn:
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
    return {str(rid): store.fields.loads(bytes(body)) for rid, body in bodies.items()}


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
