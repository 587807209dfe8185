"""Re-encryption of stored person resources under the newest keys (after ``rhip keys rotate``).

A rotation only changes what new writes use; old key versions stay so that what they encrypted
remains readable. :func:`reencrypt` moves every stored body of the protected types (current rows
and every version in ``resource_version``) to the newest SM4 and HMAC keys, and protects bodies
written in clear before field encryption was switched on, so that an old key version can be
retired once :func:`fhir_key_usage` (``rhip keys status``) counts nothing left under it; the MPI's
rows are moved by :mod:`rhip.mpi.rekey`. The version stays the same: the content does not change,
only its form at rest. Current rows are rewritten with a version-checked update (a concurrent
write wins and is protected by its writer) and their index rows rebuilt, since the pseudonyms
they carry change with the HMAC key. Pseudonyms do not name their key, so a body's HMAC version
is found by recomputing them from its plaintext (:func:`rhip.security.fields.pseudonym_versions`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Connection, func, select, tuple_, update

from rhip.errors import InvalidRequest
from rhip.security import fields
from rhip.store import indexing
from rhip.store.engine import read_connection, write_transaction
from rhip.store.ops import dumps
from rhip.store.schema import resource, resource_version

if TYPE_CHECKING:
    from rhip.security.crypto import FieldCipher
    from rhip.security.rotation import KeyUsage
    from rhip.store.fieldcrypt import FieldCrypt
    from rhip.store.store import Store


@dataclass
class ReencryptResult:
    """What a re-encryption did: bodies rewritten (current rows, history versions) and left alone."""

    current: int = 0
    versions: int = 0
    skipped: int = 0

    @property
    def total(self) -> int:
        """Rows examined."""
        return self.current + self.versions + self.skipped


def rows_to_examine(store: Store) -> int:
    """How many stored bodies :func:`reencrypt` will look at (for a progress bar)."""
    types = sorted(fields.PROTECTED_TYPES)
    with read_connection(store.engine) as conn:
        current = conn.execute(
            select(func.count()).select_from(resource).where(resource.c.res_type.in_(types))
        ).scalar_one()
        history = conn.execute(
            select(func.count()).select_from(resource_version).where(resource_version.c.res_type.in_(types))
        ).scalar_one()
    return int(current) + int(history)


def reencrypt(
    store: Store,
    *,
    force: bool = False,
    batch_size: int = 500,
    on_rows: Callable[[int], None] | None = None,
) -> ReencryptResult:
    """Rewrite stored person resources under the newest SM4 and HMAC key versions.

    Bodies whose encrypted values are all under the newest SM4 version and whose pseudonyms are
    all made with the newest HMAC key are skipped unless ``force``, so a run stopped half-way is
    finished by running it again without redoing what is done. ``on_rows`` is called with the
    number of rows examined after each batch (each batch is its own transaction). Raises
    InvalidRequest when the store does not encrypt on write (``RHIP_FIELD_ENCRYPTION=false``)
    and FieldKeyError when a stored value cannot be decrypted with the keys at hand.
    """
    crypt = store.fields
    if not crypt.protect_writes or crypt.cipher is None:
        raise InvalidRequest(
            "field encryption is off (RHIP_FIELD_ENCRYPTION=false): nothing to re-encrypt to"
        )
    if batch_size < 1:
        raise InvalidRequest("reencrypt: batch_size must be at least 1")
    newest_sm4, _ = crypt.cipher.keys.current("sm4")
    run = _Run(newest_sm4, [crypt.cipher.keys.current("hmac")], force, ReencryptResult())
    for res_type in sorted(fields.PROTECTED_TYPES):
        for table in (resource, resource_version):
            rewrite = partial(_batch, crypt=crypt, res_type=res_type, table=table, run=run)
            _pages(store, res_type, table, batch_size, write=True, handle=rewrite, on_rows=on_rows)
    return run.result


def fhir_key_usage(store: Store, usage: KeyUsage, *, batch_size: int = 2000) -> None:
    """Count into ``usage`` the SM4 and HMAC key versions every stored person body uses.

    Current rows count as ``fhir_current``, history versions (the current one included, as
    :func:`rows_to_examine` counts them) as ``fhir_history``. A body in clear counts as SM4
    version None; a body whose values cannot be decrypted (a key archived too early) has its
    pseudonyms counted as HMAC version None.
    """
    cipher = store.fields.cipher
    hmac_keys = cipher.hmac_keys() if cipher is not None else []

    for res_type in sorted(fields.PROTECTED_TYPES):
        for table, place in ((resource, "fhir_current"), (resource_version, "fhir_history")):
            count = partial(_count, usage=usage, place=place, cipher=cipher, hmac_keys=hmac_keys)
            _pages(store, res_type, table, batch_size, write=False, handle=count)


def _count(
    _conn: Connection,
    rows: Sequence[Any],
    *,
    usage: KeyUsage,
    place: str,
    cipher: FieldCipher | None,
    hmac_keys: list[tuple[int, bytes]],
) -> None:
    for _res_id, _version_id, body in rows:
        stored = orjson.loads(body)
        sm4 = fields.token_versions(stored)
        usage.add("sm4", place, {None} if sm4 is None else sm4)
        usage.add("hmac", place, _hmac_versions(stored, cipher, hmac_keys))


def _hmac_versions(
    stored: dict[str, Any], cipher: FieldCipher | None, hmac_keys: list[tuple[int, bytes]]
) -> set[int | None]:
    if cipher is None or not fields.stored_pseudonyms(stored):
        return set()
    try:
        revealed = fields.reveal(stored, cipher)
    except (KeyError, InvalidRequest):
        return {None}
    return fields.pseudonym_versions(stored, revealed, hmac_keys)


@dataclass
class _Run:
    newest_sm4: int
    hmac_keys: list[tuple[int, bytes]]  # the newest HMAC key only: anything else is rewritten
    force: bool
    result: ReencryptResult


def _pages(
    store: Store,
    res_type: str,
    table: Any,
    batch_size: int,
    *,
    write: bool,
    handle: Callable[[Connection, Sequence[Any]], None],
    on_rows: Callable[[int], None] | None = None,
) -> None:
    """One table, one type: keyset pages of ``batch_size`` live rows, each handled in its own transaction.

    ``on_rows`` hears of each page once its transaction is committed.
    """
    opened = write_transaction if write else read_connection
    after: tuple[str, int] = ("", -1)
    while True:
        stmt = (
            select(table.c.res_id, table.c.version_id, table.c.body)
            .where(
                table.c.res_type == res_type,
                table.c.deleted.is_(False),
                tuple_(table.c.res_id, table.c.version_id) > tuple_(*after),
            )
            .order_by(table.c.res_id, table.c.version_id)
            .limit(batch_size)
        )
        with opened(store.engine) as conn:
            rows = conn.execute(stmt).all()
            if not rows:
                return
            handle(conn, rows)
        after = (str(rows[-1][0]), int(rows[-1][1]))
        if on_rows is not None:
            on_rows(len(rows))


def _batch(
    conn: Connection, rows: Sequence[Any], *, crypt: FieldCrypt, res_type: str, table: Any, run: _Run
) -> None:
    for res_id, version_id, body in rows:
        _one(conn, crypt, res_type, table, (str(res_id), int(version_id), bytes(body)), run)


def _one(
    conn: Connection, crypt: FieldCrypt, res_type: str, table: Any, row: tuple[str, int, bytes], run: _Run
) -> None:
    res_id, version_id, body = row
    stored = orjson.loads(body)
    plain = crypt.reveal(stored)
    if not run.force and _under_newest_keys(stored, plain, run):
        run.result.skipped += 1
        return
    fresh = crypt.protect(plain)
    where = (table.c.res_type == res_type, table.c.res_id == res_id, table.c.version_id == version_id)
    if conn.execute(update(table).where(*where).values(body=dumps(fresh))).rowcount != 1:
        run.result.skipped += 1  # rewritten by a concurrent writer, who protected it
        return
    if table is resource_version:
        run.result.versions += 1
        return
    indexing.delete_index(conn, res_type, [res_id])
    indexing.insert_index(conn, indexing.rows_for(fresh))
    run.result.current += 1


def _under_newest_keys(stored: dict[str, Any], plain: dict[str, Any], run: _Run) -> bool:
    """True when every token is under the newest SM4 key and every pseudonym made with the newest HMAC key."""
    versions = fields.token_versions(stored)
    if versions is None or not versions <= {run.newest_sm4}:
        return False
    return fields.pseudonym_versions(stored, plain, run.hmac_keys) <= {run.hmac_keys[0][0]}
