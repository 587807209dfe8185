"""Re-encryption of stored person resources under the newest keys (after ``rhip keys rotate``).

A rotation only changes what new writes use; old key versions stay so that what they encrypted
remains readable. :func:`reencrypt` moves every stored body of the protected types (current rows
and every version in ``resource_version``) to the newest SM4 and HMAC keys, and protects bodies
written in clear before field encryption was switched on, so that an old key version can
eventually be retired. The version stays the same: the content does not change, only its form at
rest. Current rows are rewritten with a version-checked update (a concurrent write wins and is
protected by its writer) and their index rows rebuilt, since the pseudonyms they carry change
with the HMAC key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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

    Bodies whose encrypted values are all under the newest SM4 version are skipped unless
    ``force`` (needed after rotating only the ``hmac`` key, whose version the pseudonyms do not
    show). ``on_rows`` is called with the number of rows examined after each batch. Raises
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
    current_version, _ = crypt.cipher.keys.current("sm4")
    result = ReencryptResult()
    for res_type in sorted(fields.PROTECTED_TYPES):
        for table in (resource, resource_version):
            _pass(store, crypt, res_type, table, _Run(current_version, force, batch_size, on_rows, result))
    return result


@dataclass
class _Run:
    newest: int
    force: bool
    batch_size: int
    on_rows: Callable[[int], None] | None
    result: ReencryptResult


def _pass(store: Store, crypt: FieldCrypt, res_type: str, table: Any, run: _Run) -> None:
    """One table, one type: keyset pages of ``batch_size`` rows, one transaction each."""
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
            .limit(run.batch_size)
        )
        with write_transaction(store.engine) as conn:
            rows = conn.execute(stmt).all()
            if not rows:
                return
            for res_id, version_id, body in rows:
                _one(conn, crypt, res_type, table, (str(res_id), int(version_id), bytes(body)), run)
        after = (str(rows[-1][0]), int(rows[-1][1]))
        if run.on_rows is not None:
            run.on_rows(len(rows))


def _one(
    conn: Connection, crypt: FieldCrypt, res_type: str, table: Any, row: tuple[str, int, bytes], run: _Run
) -> None:
    res_id, version_id, body = row
    stored = orjson.loads(body)
    versions = fields.token_versions(stored)
    if not run.force and versions is not None and versions <= {run.newest}:
        run.result.skipped += 1
        return
    fresh = crypt.protect(crypt.reveal(stored))
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
