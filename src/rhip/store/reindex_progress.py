"""Where an interrupted ``rhip db reindex`` stopped, so that the next run resumes there.

A reindex walks types in sorted order and each type in keyset pages of ``res_id``; the cursor is
therefore one (type, last id) pair, kept in the single row of ``reindex_progress`` and updated in
the transaction of every page, so the cursor and the index rows can never disagree: a page whose
transaction did not commit left neither its rows nor its cursor. The row also holds the run's
parameters and a fingerprint of the index definitions it started with; resuming with other
types or under other definitions would leave a mix no fresh run gives, so it is refused.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, delete, insert, select, update

from rhip import __version__
from rhip.errors import InvalidRequest
from rhip.fhir.search_params import all_resource_types, search_params_for
from rhip.store.index_schema import INDEX_TABLES
from rhip.store.schema import reindex_progress

__all__ = ["Progress", "advance", "begin", "clear", "definitions_fingerprint", "load", "refuse_if_changed"]

_RUN = 1  # the only row: one reindex run at a time


@dataclass(frozen=True)
class Progress:
    """The saved state of a run: parameters, definitions fingerprint and cursor."""

    started_at: float
    params: dict[str, Any]
    definitions: str
    res_type: str | None = None
    after_id: str = ""
    type_done: bool = False
    walked: int = 0

    def start_after(self, res_type: str) -> str | None:
        """The id after which ``res_type``'s walk starts ("" from the first), None when it is done."""
        if self.res_type is None or res_type > self.res_type:
            return ""
        if res_type < self.res_type or self.type_done:
            return None
        return self.after_id

    def where(self) -> str:
        """The cursor in words: ``Observation/o123``, ``after Observation``, ``the beginning``."""
        if self.res_type is None:
            return "the beginning"
        if self.type_done:
            return f"the end of {self.res_type}"
        return f"{self.res_type}/{self.after_id}" if self.after_id else f"the beginning of {self.res_type}"

    def started(self) -> str:
        """The start time in UTC, to the minute."""
        return datetime.fromtimestamp(self.started_at, UTC).strftime("%Y-%m-%d %H:%M UTC")


def definitions_fingerprint() -> str:
    """SHA-256 over what decides a body's index rows: the release, every type's parameters, the tables.

    The parameter definitions include those a region registered in this process, so a run resumed
    without (or with other) registrations is refused rather than finished with other rows.
    """
    digest = hashlib.sha256(__version__.encode())
    for res_type in all_resource_types():
        for name, definition in sorted(search_params_for(res_type).items()):
            digest.update(f"{res_type}\0{name}\0{definition!r}\n".encode())
    for table in INDEX_TABLES:
        digest.update(f"{table.name}:{','.join(c.name for c in table.columns)}\n".encode())
    return digest.hexdigest()


def load(conn: Connection) -> Progress | None:
    """The saved run, or None when no run is under way or interrupted."""
    row = conn.execute(select(reindex_progress).where(reindex_progress.c.run == _RUN)).mappings().first()
    if row is None:
        return None
    return Progress(
        started_at=float(row["started_at"]),
        params=orjson.loads(row["params"]),
        definitions=str(row["definitions"]),
        res_type=row["res_type"],
        after_id=str(row["after_id"]),
        type_done=bool(row["type_done"]),
        walked=int(row["walked"]),
    )


def begin(conn: Connection, params: dict[str, Any], definitions: str) -> Progress:
    """Record a new run with no page done (replacing any saved one) and return it."""
    fresh = Progress(started_at=time.time(), params=params, definitions=definitions)
    clear(conn)
    conn.execute(
        insert(reindex_progress).values(
            run=_RUN,
            started_at=fresh.started_at,
            params=orjson.dumps(params, option=orjson.OPT_SORT_KEYS).decode(),
            definitions=definitions,
            res_type=None,
            after_id="",
            type_done=False,
            walked=0,
        )
    )
    return fresh


def advance(conn: Connection, res_type: str, after_id: str, walked: int, *, type_done: bool = False) -> None:
    """Move the cursor past a page of ``walked`` resources (in the page's own transaction)."""
    stmt = (
        update(reindex_progress)
        .where(reindex_progress.c.run == _RUN)
        .values(
            res_type=res_type,
            after_id=after_id,
            type_done=type_done,
            walked=reindex_progress.c.walked + walked,
        )
    )
    conn.execute(stmt)


def clear(conn: Connection) -> None:
    """Forget the saved run (a finished run, or ``--restart``)."""
    conn.execute(delete(reindex_progress).where(reindex_progress.c.run == _RUN))


def refuse_if_changed(saved: Progress, params: dict[str, Any], definitions: str) -> None:
    """Raise InvalidRequest when ``saved`` cannot be resumed with ``params`` under ``definitions``.

    The types must be the same (they decide which rows are rebuilt, and whether orphan types are
    swept); the batch size may differ, as pages of any size give the same rows.
    """
    if saved.params.get("types") != params.get("types"):
        reason = f"it was started for {_types(saved.params)}, this run is for {_types(params)}"
    elif saved.definitions != definitions:
        reason = "the search parameters or their extraction changed since it started"
    else:
        return
    raise InvalidRequest(
        f"reindex: the interrupted run started {saved.started()} (stopped at {saved.where()}) "
        f"cannot be resumed: {reason}; run again with --restart to start over",
        code="conflict",
    )


def _types(params: dict[str, Any]) -> str:
    types = params.get("types")
    return " ".join(f"--type {t}" for t in types) if types else "every type (no --type)"
