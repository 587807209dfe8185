"""Single-resource reads and writes on one open connection.

:class:`Ops` is what both :class:`rhip.store.Store` (one transaction per call) and transaction
bundles (one transaction for the whole bundle) run on. Every write follows the same steps: read the
current row, compute the next version and a strictly later timestamp, stamp ``meta``, then change
the ``resource`` row with a version-checked statement (``UPDATE ... WHERE version_id = :expected``,
or an insert that does nothing on a duplicate key), append to ``resource_version`` and rebuild the
resource's index rows. When the version check finds that a concurrent writer got there first the
write is retried from a fresh read, unless the caller asked for a specific version (If-Match),
in which case it fails with 412.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
from sqlalchemy import Connection, bindparam, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from rhip.errors import (
    InvalidRequest,
    InvalidResource,
    MultipleMatches,
    ResourceGone,
    ResourceNotFound,
    VersionConflict,
)
from rhip.store import fieldcrypt, indexing
from rhip.store.guard import WriteCheck, WriteGuard
from rhip.store.meta import check_id, check_type, etag, new_id, next_timestamp, stamp
from rhip.store.patch import apply_patch, check_identity
from rhip.store.schema import resource as resource_table
from rhip.store.schema import resource_version

#: How often a write without If-Match re-reads and retries after losing a race.
RETRIES = 5

Params = list[tuple[str, str]]

# Statements built once (bound parameters only), so each call reuses SQLAlchemy's compiled form.
_T = resource_table
_CURRENT = select(_T.c.version_id, _T.c.last_updated, _T.c.deleted, _T.c.body).where(
    _T.c.res_type == bindparam("k_type"), _T.c.res_id == bindparam("k_id")
)
_FIRST_SQLITE = sqlite_insert(_T).on_conflict_do_nothing().execution_options(preserve_rowcount=True)
_FIRST_PG = pg_insert(_T).on_conflict_do_nothing().execution_options(preserve_rowcount=True)
_VERSION = resource_version.insert()
_REPLACE = (
    update(_T)
    .where(
        _T.c.res_type == bindparam("k_type"),
        _T.c.res_id == bindparam("k_id"),
        _T.c.version_id == bindparam("k_version"),
    )
    .values(
        version_id=bindparam("n_version"),
        last_updated=bindparam("n_ts"),
        deleted=bindparam("n_deleted"),
        body=bindparam("n_body"),
    )
)


@dataclass(frozen=True)
class WriteResult:
    """Outcome of one write.

    ``outcome`` is one of ``created``, ``updated``, ``unchanged`` (bulk path, identical body),
    ``existing`` (conditional create matched; ``resource`` is the existing one), ``deleted`` and
    ``already-deleted``.
    """

    resource: dict[str, Any]
    created: bool
    version_id: int
    last_updated: float
    outcome: str = "updated"

    @property
    def res_type(self) -> str:
        """The resource type written."""
        return str(self.resource["resourceType"])

    @property
    def res_id(self) -> str:
        """The id of the resource written."""
        return str(self.resource["id"])

    @property
    def etag(self) -> str:
        """Weak ETag of the version written, e.g. ``W/"2"``."""
        return etag(self.version_id)

    @property
    def location(self) -> str:
        """Relative versioned URL, e.g. ``Patient/123/_history/2``."""
        return f"{self.res_type}/{self.res_id}/_history/{self.version_id}"


class Current(NamedTuple):
    """The current row of a resource."""

    version_id: int
    last_updated: float
    deleted: bool
    body: bytes


def dumps(resource: dict[str, Any]) -> bytes:
    """Encode a resource body for storage; InvalidResource if it is not plain JSON data."""
    try:
        return orjson.dumps(resource)
    except orjson.JSONEncodeError as exc:
        raise InvalidResource(
            "the resource holds values that are not JSON (e.g. integers over 64 bits)"
        ) from exc


def loads(body: bytes) -> dict[str, Any]:
    """Decode a stored resource body."""
    value: dict[str, Any] = orjson.loads(body)
    return value


def tombstone(res_type: str, res_id: str, version_id: int, ts: float) -> dict[str, Any]:
    """The stub body kept in ``resource`` for a deleted resource."""
    return stamp({"resourceType": res_type}, res_id, version_id, ts)


class Ops:
    """Reads and writes of single resources on ``conn`` (the caller owns the transaction).

    ``guard``, when given, is asked about every version before it is written (see
    :mod:`rhip.store.guard`); it sees the stored version the write path reads anyway.
    """

    def __init__(self, conn: Connection, guard: WriteGuard | None = None) -> None:
        self.conn = conn
        self.dialect = conn.dialect.name
        self.fields = fieldcrypt.of(conn)
        self.guard = guard

    # --- reads ---------------------------------------------------------------------------------
    def current(self, res_type: str, res_id: str) -> Current | None:
        """The current row of a resource, or None if it never existed."""
        row = self.conn.execute(_CURRENT, {"k_type": res_type, "k_id": res_id}).first()
        return None if row is None else Current(int(row[0]), float(row[1]), bool(row[2]), bytes(row[3]))

    def read(self, res_type: str, res_id: str) -> dict[str, Any]:
        """The current body; ResourceNotFound if it never existed, ResourceGone if deleted."""
        cur = self.current(res_type, res_id)
        if cur is None:
            raise ResourceNotFound(f"{res_type}/{res_id} is not known")
        if cur.deleted:
            raise ResourceGone(f"{res_type}/{res_id} was deleted")
        return self.fields.loads(cur.body)

    def current_result(self, res_type: str, res_id: str) -> WriteResult:
        """The current version as a WriteResult with outcome ``existing`` (conditional create hit)."""
        cur = self.current(res_type, res_id)
        if cur is None:
            raise ResourceNotFound(f"{res_type}/{res_id} is not known")
        if cur.deleted:
            raise ResourceGone(f"{res_type}/{res_id} was deleted")
        return WriteResult(self.fields.loads(cur.body), False, cur.version_id, cur.last_updated, "existing")

    def vread(self, res_type: str, res_id: str, version_id: int) -> dict[str, Any]:
        """One version's body; ResourceNotFound if no such version, ResourceGone for a delete."""
        v = resource_version
        stmt = select(v.c.deleted, v.c.body).where(
            v.c.res_type == res_type, v.c.res_id == res_id, v.c.version_id == version_id
        )
        row = self.conn.execute(stmt).first()
        if row is None:
            raise ResourceNotFound(f"{res_type}/{res_id} has no version {version_id}")
        if row[0] or row[1] is None:
            raise ResourceGone(f"{res_type}/{res_id} version {version_id} is a delete")
        return self.fields.loads(bytes(row[1]))

    def matching_ids(self, res_type: str, params: Params) -> list[str]:
        """Ids of current resources of ``res_type`` that match search ``params``."""
        from rhip.store.search import matching_ids

        if not params:
            raise InvalidRequest(f"conditional {res_type} request without search criteria")
        return list(matching_ids(self.conn, res_type, params))

    # --- writes --------------------------------------------------------------------------------
    def create(
        self,
        resource: dict[str, Any],
        *,
        if_none_exist: Params | None = None,
        assign_id: bool = False,
        method: str = "POST",
    ) -> WriteResult:
        """Create a resource (version 1); see :meth:`rhip.store.Store.create`."""
        res_type = check_type(resource.get("resourceType") if isinstance(resource, dict) else None)
        if if_none_exist is not None:
            existing = self.find_one(res_type, if_none_exist, "If-None-Exist")
            if existing is not None:
                return self.current_result(res_type, existing)
        if assign_id or resource.get("id") is None:
            res_id = new_id()
        else:
            res_id = check_id(resource.get("id"), f"{res_type}.id")
        result = self._insert_first(res_type, res_id, resource, method)
        if result is None:
            raise VersionConflict(f"{res_type}/{res_id} already exists", status=409)
        return result

    def update(
        self,
        res_type: str,
        res_id: str,
        resource: dict[str, Any],
        *,
        if_match: int | None = None,
        method: str = "PUT",
    ) -> WriteResult:
        """Replace a resource with a new version, or create it with this id; see Store.update."""
        check_type(res_type, "type")
        check_id(res_id)
        self._check_body(res_type, res_id, resource)
        for _ in range(RETRIES):
            cur = self.current(res_type, res_id)
            if cur is None:
                if if_match is not None:
                    raise VersionConflict(f"If-Match: {res_type}/{res_id} does not exist", status=412)
                created = self._insert_first(res_type, res_id, resource, method)
                if created is not None:
                    return created
                continue
            self._check_if_match(res_type, res_id, cur, if_match)
            result = self._replace(res_type, res_id, resource, cur, method)
            if result is not None:
                return result
            if if_match is not None:
                raise VersionConflict(f"{res_type}/{res_id} changed concurrently (If-Match)", status=412)
        raise VersionConflict(f"{res_type}/{res_id} is being written concurrently; retry", status=409)

    def conditional_update(self, res_type: str, params: Params, resource: dict[str, Any]) -> WriteResult:
        """Update the one resource matching ``params``; create when none does; 412 when several do."""
        check_type(res_type, "type")
        self._check_body(res_type, None, resource)
        match = self.find_one(res_type, params, "conditional update")
        if match is None:
            if resource.get("id") is None:
                return self.create(resource, assign_id=True, method="PUT")
            res_id = check_id(resource["id"], f"{res_type}.id")
            cur = self.current(res_type, res_id)
            if cur is not None and not cur.deleted:
                raise VersionConflict(
                    f"{res_type}/{res_id} exists but does not match the conditional update", status=409
                )
            return self.update(res_type, res_id, resource)
        if resource.get("id") not in (None, match):
            raise InvalidRequest(f"{res_type}.id does not match the resource found by the conditional update")
        return self.update(res_type, match, {**resource, "id": match})

    def patch(
        self, res_type: str, res_id: str, operations: object, *, if_match: int | None = None
    ) -> WriteResult:
        """Apply a JSON Patch to the current version; see Store.patch."""
        for _ in range(RETRIES):
            cur = self.current(res_type, res_id)
            if cur is None:
                raise ResourceNotFound(f"{res_type}/{res_id} is not known")
            if cur.deleted:
                raise ResourceGone(f"{res_type}/{res_id} was deleted")
            self._check_if_match(res_type, res_id, cur, if_match)
            original = self.fields.loads(cur.body)
            patched = apply_patch(original, operations)
            check_identity(original, patched)
            result = self._replace(res_type, res_id, patched, cur, "PATCH")
            if result is not None:
                return result
            if if_match is not None:
                raise VersionConflict(f"{res_type}/{res_id} changed concurrently (If-Match)", status=412)
        raise VersionConflict(f"{res_type}/{res_id} is being written concurrently; retry", status=409)

    def delete(self, res_type: str, res_id: str, *, if_match: int | None = None) -> WriteResult:
        """Logically delete a resource (a new version marked deleted); see Store.delete."""
        for _ in range(RETRIES):
            cur = self.current(res_type, res_id)
            if cur is None:
                raise ResourceNotFound(f"{res_type}/{res_id} is not known")
            self._check_if_match(res_type, res_id, cur, if_match)
            if cur.deleted:
                body = loads(cur.body)
                return WriteResult(body, False, cur.version_id, cur.last_updated, "already-deleted")
            result = self._replace(res_type, res_id, None, cur, "DELETE")
            if result is not None:
                return result
        raise VersionConflict(f"{res_type}/{res_id} is being written concurrently; retry", status=409)

    def conditional_delete(self, res_type: str, params: Params, *, allow_multiple: bool = False) -> int:
        """Delete the resources matching ``params``; return how many were deleted."""
        check_type(res_type, "type")
        self.lock_condition(res_type, params)
        ids = self.matching_ids(res_type, params)
        if len(ids) > 1 and not allow_multiple:
            raise MultipleMatches(f"conditional delete matched {len(ids)} {res_type} resources")
        for res_id in ids:
            self.delete(res_type, res_id)
        return len(ids)

    # --- internals -----------------------------------------------------------------------------
    def find_one(self, res_type: str, params: Params, what: str) -> str | None:
        """The id of the one resource matching ``params``; None if none; MultipleMatches if several."""
        self.lock_condition(res_type, params)
        ids = self.matching_ids(res_type, params)
        if len(ids) > 1:
            raise MultipleMatches(f"{what} matched {len(ids)} {res_type} resources")
        return ids[0] if ids else None

    def lock_condition(self, res_type: str, params: Params) -> None:
        """Serialise conditional writes with the same criteria (PostgreSQL; SQLite writers are serial)."""
        if self.dialect != "postgresql":
            return
        key_text = res_type + "?" + "&".join(f"{k}={v}" for k, v in sorted(params))
        key = int.from_bytes(hashlib.blake2b(key_text.encode(), digest_size=8).digest(), "big", signed=True)
        self.conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})

    @staticmethod
    def _check_body(res_type: str, res_id: str | None, resource: object) -> None:
        if not isinstance(resource, dict):
            raise InvalidRequest("the request body is not a resource")
        if resource.get("resourceType") != res_type:
            raise InvalidRequest(f"resourceType of the body does not match the URL type {res_type}")
        if res_id is not None and resource.get("id") not in (None, res_id):
            raise InvalidRequest(f"{res_type}.id does not match the id in the URL")

    @staticmethod
    def _check_if_match(res_type: str, res_id: str, cur: Current, if_match: int | None) -> None:
        if if_match is not None and cur.version_id != if_match:
            raise VersionConflict(
                f"If-Match: {res_type}/{res_id} is at version {cur.version_id}, not {if_match}", status=412
            )

    def _insert_first(
        self, res_type: str, res_id: str, resource: dict[str, Any], method: str
    ) -> WriteResult | None:
        """Insert version 1; None when the id exists already (a concurrent create won)."""
        if self.guard is not None:
            self.guard(WriteCheck(method, res_type, res_id, None, resource, self.read))
        ts = next_timestamp(None)
        stored = self.fields.protect(resource)
        body = stamp(stored, res_id, 1, ts)
        encoded = dumps(body)
        values = {
            "res_type": res_type,
            "res_id": res_id,
            "version_id": 1,
            "last_updated": ts,
            "deleted": False,
            "body": encoded,
        }
        stmt = _FIRST_PG if self.dialect == "postgresql" else _FIRST_SQLITE
        if self.conn.execute(stmt, values).rowcount != 1:
            return None
        self.conn.execute(_VERSION, {**values, "method": method})
        indexing.insert_tuples(self.conn, indexing.tuple_rows_for(body))
        shown = body if stored is resource else stamp(resource, res_id, 1, ts)
        return WriteResult(shown, True, 1, ts, "created")

    def _replace(
        self, res_type: str, res_id: str, resource: dict[str, Any] | None, cur: Current, method: str
    ) -> WriteResult | None:
        """Write version ``cur + 1`` (``resource`` None: a delete); None if ``cur`` is no longer current."""
        if self.guard is not None:
            current = None if cur.deleted else self.fields.loads(cur.body)
            self.guard(WriteCheck(method, res_type, res_id, current, resource, self.read))
        version = cur.version_id + 1
        ts = next_timestamp(cur.last_updated)
        deleted = resource is None
        stored = None if resource is None else self.fields.protect(resource)
        body = (
            tombstone(res_type, res_id, version, ts) if stored is None else stamp(stored, res_id, version, ts)
        )
        encoded = dumps(body)
        key = {"k_type": res_type, "k_id": res_id, "k_version": cur.version_id}
        new = {"n_version": version, "n_ts": ts, "n_deleted": deleted, "n_body": encoded}
        if self.conn.execute(_REPLACE, {**key, **new}).rowcount != 1:
            return None
        self.conn.execute(
            _VERSION,
            {
                "res_type": res_type,
                "res_id": res_id,
                "version_id": version,
                "last_updated": ts,
                "method": method,
                "deleted": deleted,
                "body": None if deleted else encoded,
            },
        )
        indexing.delete_index(self.conn, res_type, [res_id])
        if not deleted:
            indexing.insert_tuples(self.conn, indexing.tuple_rows_for(body))
        if resource is None:
            return WriteResult(body, False, version, ts, "deleted")
        shown = body if stored is resource else stamp(resource, res_id, version, ts)
        return WriteResult(shown, cur.deleted, version, ts, "created" if cur.deleted else "updated")
