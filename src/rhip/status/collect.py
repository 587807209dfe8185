"""Gather the figures of ``rhip status``, one section per capability, as plain JSON-ready dicts.

A section that has nothing to show yet carries ``{"note": ...}`` instead of its figures (no
store file yet, schema behind, no lake yet), so both the tables and a monitoring script read the
same answer without a crash on a fresh data directory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rhip.config import Settings
from rhip.store.meta import format_instant

if TYPE_CHECKING:
    from rhip.store import Store

#: What a section says when there is nothing to count yet.
NONE_YET = "none yet"
#: Sections read from the store's database, in the order they are printed.
DATABASE_SECTIONS = ("ingest", "mpi", "lake", "surveillance", "audit")


def _sqlite_file(settings: Settings) -> Path | None:
    """The SQLite file of the default store (None when a database URL is configured)."""
    return None if settings.database_url else settings.data_dir / "rhip.sqlite"


def collect_status(settings: Settings, *, top: int = 10) -> dict[str, Any]:
    """Every section of the status, keyed by name; ``top`` resource types are listed by count.

    Opens the store without migrating it and closes it again; an unreachable database raises
    the driver's error (the CLI turns it into one line).
    """
    from rhip.store import Store
    from rhip.store.fieldcrypt import PLAIN

    keys = _keys(settings)
    sqlite_file = _sqlite_file(settings)
    if sqlite_file is not None and not sqlite_file.exists():
        note = {"note": f"{NONE_YET} (no store in the data directory)"}
        return {
            "store": {"backend": "sqlite", **note},
            **dict.fromkeys(DATABASE_SECTIONS, note),
            "keys": keys,
        }
    with Store(settings.resolved_database_url, migrate=False, fields=PLAIN) as store:
        store_section = _store(store, top)
        if not store_section["at_head"]:
            behind = {"note": f"not read: the schema is behind ({store_section['advice']})"}
            return {"store": store_section, **dict.fromkeys(DATABASE_SECTIONS, behind), "keys": keys}
        readers: dict[str, Callable[[Store, Settings], dict[str, Any]]] = {
            "ingest": _ingest,
            "mpi": _mpi,
            "lake": _lake,
            "surveillance": _surveillance,
            "audit": _audit,
        }
        sections = {name: readers[name](store, settings) for name in DATABASE_SECTIONS}
    return {"store": store_section, **sections, "keys": keys}


def _store(store: Store, top: int) -> dict[str, Any]:
    from rhip.api.readiness import schema_state

    revision, head = schema_state(store.engine)
    section: dict[str, Any] = {
        "backend": store.engine.dialect.name,
        "revision": revision,
        "head": head,
        "at_head": revision == head,
    }
    if revision != head:
        section["advice"] = f"at {revision or 'none'}, this version needs {head}: run rhip db upgrade"
        return section
    counts = store.count_by_type()
    section["resources_total"] = sum(counts.values())
    section["resource_types"] = len(counts)
    section["resources"] = [{"type": t, "count": n} for t, n in list(counts.items())[:top]]
    return section


def _ingest(store: Store, settings: Settings) -> dict[str, Any]:
    from rhip.ingest.batches import latest_per_facility
    from rhip.ingest.quarantine import count_open

    fields = ("facility", "connector", "finished", "received", "stored", "quarantined", "duplicates", "stale")
    batches = [{name: row[name] for name in fields} for row in latest_per_facility(store.engine)]
    waiting = count_open(store.engine)
    return {
        "last_batches": batches,
        "quarantine_open": sum(waiting.values()),
        "quarantine_open_by_facility": dict(sorted(waiting.items())),
    }


def _mpi(store: Store, settings: Settings) -> dict[str, Any]:
    from rhip.mpi.service import index_counts

    return index_counts(store.engine)


def _lake(store: Store, settings: Settings) -> dict[str, Any]:
    from rhip.lake.export import last_export

    exported = last_export(settings.lake_dir)
    if exported is None:
        return {"note": f"{NONE_YET} (no export: rhip export)"}
    at, watermark = exported
    newest = store.last_write()
    return {
        "last_export": format_instant(at),
        "store_changed_since": newest is not None and newest > watermark,
    }


def _surveillance(store: Store, settings: Settings) -> dict[str, Any]:
    from rhip.surveillance.alerts import count_by_status

    with store.engine.connect() as conn:
        return {f"{status}_alerts": n for status, n in count_by_status(conn).items()}


def _audit(store: Store, settings: Settings) -> dict[str, Any]:
    from rhip.security.audit import chain_head
    from rhip.security.audit_checks import last_verified, verify_advice

    head = chain_head(store.engine)
    last = last_verified(settings.data_dir)
    needed, advice = verify_advice(head, last)
    return {
        "events": head[0],
        "head_hash": head[1],
        "last_verified": None if last is None else format_instant(last.at),
        "verify_needed": needed,
        "advice": advice,
    }


def _keys(settings: Settings) -> list[dict[str, Any]]:
    """Key versions on disk per kind; the newest is the one in use. Never generates a key."""
    from rhip.security.keys import KEY_KINDS, KeyRing

    ring = KeyRing(settings.data_dir)
    found = [(kind, ring.versions(kind)) for kind in KEY_KINDS]
    return [
        {"kind": kind, "versions": versions, "current": versions[-1] if versions else None}
        for kind, versions in found
    ]
