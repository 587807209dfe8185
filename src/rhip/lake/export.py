"""Incremental export of the operational store into the Parquet lake.

Layout under ``settings.lake_dir`` (one folder per resource type, hive-style partitions)::

    <Type>/layer=base/batch=<n>/part-<k>.parquet    full snapshot (chunked files)
    <Type>/layer=delta/batch=<n>/part-0.parquet     changes since the snapshot, one batch per export
    _state.json                                     watermark (last lastUpdated exported) per type

Each row is ``id, last_updated, deleted, resource, typed`` (resource = FHIR JSON text, typed = the
same resource parsed once into a nested struct, see :mod:`rhip.lake.typed_copy`). An incremental
export asks the store only for resources written since the watermark (deletions included as
tombstones) and appends them as a delta batch, so its cost follows the amount of change, not the
size of the region. Readers see the current state through :func:`current_sql`: base rows not
superseded by a delta, plus the newest delta row per id unless it is a deletion. When the deltas
grow past a fraction of the base, the type is compacted into a new base.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from rhip.errors import InvalidRequest
from rhip.lake.typed_copy import TYPED_COLUMN, add_typed_column, infer_structure

if TYPE_CHECKING:
    import pyarrow as pa

    from rhip.store import Store

__all__ = [
    "ExportReport",
    "compact",
    "current_sql",
    "export_store",
    "lake_types",
    "last_export",
    "parquet_glob",
    "read_state",
    "typed_structure",
]

log = logging.getLogger(__name__)

STATE_FILE = "_state.json"
CHUNK_ROWS = 200_000
#: Compact a type when its delta rows exceed this fraction of its base rows.
COMPACT_RATIO = 0.25


@dataclass
class ExportReport:
    """What one export run did, per resource type."""

    mode: str
    written: dict[str, int] = field(default_factory=dict)
    deleted: dict[str, int] = field(default_factory=dict)
    compacted: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        """Rows written (changes and deletions) across types."""
        return sum(self.written.values()) + sum(self.deleted.values())


def read_state(lake_dir: Path) -> dict[str, Any]:
    """The lake's state file (empty state when the lake is new)."""
    path = lake_dir / STATE_FILE
    if not path.exists():
        return {"types": {}}
    state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return state


def last_export(lake_dir: Path) -> tuple[float, float] | None:
    """(epoch seconds of the last export, newest ``lastUpdated`` it took); None before the first.

    The state file is rewritten by every export, so its time is the export's; the newest
    watermark, compared with :meth:`rhip.store.Store.last_write`, tells whether the store has
    changed since.
    """
    path = lake_dir / STATE_FILE
    if not path.exists():
        return None
    marks = [float(s.get("watermark", 0.0)) for s in read_state(lake_dir).get("types", {}).values()]
    return path.stat().st_mtime, max(marks, default=0.0)


def _write_state(lake_dir: Path, state: dict[str, Any]) -> None:
    tmp = lake_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(lake_dir / STATE_FILE)


def lake_types(lake_dir: Path) -> list[str]:
    """Resource types present in the lake, sorted."""
    state = read_state(lake_dir)
    return sorted(t for t, s in state.get("types", {}).items() if s.get("base_batch") is not None)


def parquet_glob(lake_dir: Path, resource_type: str, layer: str = "*") -> str:
    """Glob of the Parquet files of one type (``layer`` base, delta or *)."""
    return str(lake_dir / resource_type / f"layer={layer}" / "batch=*" / "*.parquet")


def current_sql(lake_dir: Path, resource_type: str) -> str:
    """DuckDB SQL giving the current ``id, resource`` (and ``typed``) of a type from base + deltas.

    Paths come from the lake's own state (resource type names are validated), not from input.
    """
    state = read_state(lake_dir).get("types", {}).get(resource_type)
    if state is None:
        raise InvalidRequest(f"resource type {resource_type} is not in the lake")
    base = _quote(str(lake_dir / resource_type / "layer=base" / f"batch={state['base_batch']}" / "*.parquet"))
    cols = f"id, resource, {TYPED_COLUMN}" if state.get("typed_structure") else "id, resource"
    if not state.get("delta_batches"):
        return f"SELECT {cols} FROM read_parquet({base})"
    delta = _quote(parquet_glob(lake_dir, resource_type, "delta"))
    newest = (
        f"SELECT {cols}, deleted, row_number() OVER (PARTITION BY id ORDER BY last_updated DESC, "
        f"batch DESC) AS rn FROM read_parquet({delta}, hive_partitioning = true)"
    )
    return (
        f"SELECT {cols} FROM read_parquet({base}) AS b WHERE NOT EXISTS "
        f"(SELECT 1 FROM read_parquet({delta}, hive_partitioning = true) AS d WHERE d.id = b.id) "
        f"UNION ALL SELECT {cols} FROM ({newest}) WHERE rn = 1 AND NOT deleted"
    )


def typed_structure(lake_dir: Path, resource_type: str) -> dict[str, Any] | None:
    """The structure of a type's typed copy in the lake, or None when the lake has none."""
    state = read_state(lake_dir).get("types", {}).get(resource_type) or {}
    found = state.get("typed_structure")
    return found if isinstance(found, dict) and found else None


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _store_types(store: Store) -> list[str]:
    from sqlalchemy import select

    from rhip.store.schema import resource

    with store.engine.connect() as conn:
        return sorted(r[0] for r in conn.execute(select(resource.c.res_type).distinct()))


def _batches(rows: Iterator[tuple[dict[str, Any] | None, str, float, bool]]) -> Iterator[pa.Table]:
    import pyarrow as pa

    ids: list[str] = []
    stamps: list[float] = []
    deleted: list[bool] = []
    bodies: list[str | None] = []
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("last_updated", pa.float64()),
            ("deleted", pa.bool_()),
            ("resource", pa.string()),
        ]
    )
    for body, res_id, last_updated, is_deleted in rows:
        ids.append(res_id)
        stamps.append(last_updated)
        deleted.append(is_deleted)
        bodies.append(None if body is None else orjson.dumps(body).decode())
        if len(ids) >= CHUNK_ROWS:
            yield pa.table([ids, stamps, deleted, bodies], schema=schema)
            ids, stamps, deleted, bodies = [], [], [], []
    if ids:
        yield pa.table([ids, stamps, deleted, bodies], schema=schema)


def _note_ids(
    rows: Iterator[tuple[dict[str, Any] | None, str, float, bool]], ids_at: dict[float, list[str]]
) -> Iterator[tuple[dict[str, Any] | None, str, float, bool]]:
    """Pass rows through, remembering the ids written at the newest instant (the next watermark)."""
    newest = -1.0
    for row in rows:
        if row[2] > newest:
            newest = row[2]
            ids_at.clear()
            ids_at[newest] = []
        if row[2] == newest:
            ids_at[newest].append(row[1])
        yield row


def _write(
    folder: Path,
    tables: Iterator[pa.Table],
    on_rows: Callable[[int], None],
    typed: tuple[str, dict[str, Any] | None] | None = None,
) -> tuple[int, int, float, dict[str, Any] | None]:
    """Write chunks; ``typed`` = (resource type, structure or None to infer it) adds the typed copy."""
    import duckdb
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    written = removed = 0
    high = 0.0
    structure = typed[1] if typed else None
    con: duckdb.DuckDBPyConnection | None = None
    try:
        for k, table in enumerate(tables):
            if typed is not None:
                con = con or duckdb.connect()  # opened only when there is something to write
                if structure is None:
                    con.register("chunk_", table)
                    structure = infer_structure(con, "chunk_", typed[0])
                    con.unregister("chunk_")
                if structure:
                    table = add_typed_column(con, table, structure)
            part = folder / f"part-{k:05d}.parquet"
            pq.write_table(table, part, compression="zstd", row_group_size=50_000)
            n_deleted = int(pc.sum(table["deleted"]).as_py() or 0)
            removed += n_deleted
            written += table.num_rows - n_deleted
            high = max(high, float(pc.max(table["last_updated"]).as_py() or 0.0))
            on_rows(table.num_rows)
    finally:
        if con is not None:
            con.close()
    return written, removed, high, structure


def export_store(
    store: Store,
    lake_dir: Path,
    *,
    types: list[str] | None = None,
    full: bool = False,
    on_rows: Callable[[int], None] | None = None,
) -> ExportReport:
    """Export the store into the lake: a full snapshot for new types (or ``full``), else a delta.

    Args:
        store: the operational store (read with ``Store.iter_current``).
        lake_dir: root of the lake (``settings.lake_dir``).
        types: resource types to export; default: every type in the store.
        full: rewrite a full snapshot for every type instead of appending deltas.
        on_rows: progress callback receiving row counts as batches are written.
    """
    started = time.perf_counter()
    lake_dir.mkdir(parents=True, exist_ok=True)
    state = read_state(lake_dir)
    tstate: dict[str, Any] = state.setdefault("types", {})
    report = ExportReport("full" if full or not tstate else "incremental")
    tick = on_rows or (lambda n: None)
    for rtype in types or _store_types(store):
        st = tstate.get(rtype)
        # The watermark is the newest lastUpdated seen; rows at that instant are read again and
        # deduplicated by id, so a write landing in the same millisecond is never missed.
        batch = int(st["next_batch"]) if st else 0
        if st is None or full or st.get("base_batch") is None:
            ids_at: dict[float, list[str]] = {}
            rows = _note_ids(store.iter_current(rtype, include_deleted=False), ids_at)
            folder = lake_dir / rtype / "layer=base" / f"batch={batch}"
            written, removed, high, structure = _write(folder, _batches(rows), tick, (rtype, None))
            old = st or {}
            _remove_layers(lake_dir / rtype, keep=folder)
            tstate[rtype] = {
                "base_batch": batch, "base_rows": written, "delta_batches": [], "delta_rows": 0,
                "watermark": max(high, float(old.get("watermark", 0.0))), "next_batch": batch + 1,
                "watermark_ids": ids_at.get(high, []), "typed_structure": structure or {},
            }  # fmt: skip
        else:
            mark = float(st["watermark"])
            seen = set(st.get("watermark_ids", []))
            rows = (
                row
                for row in store.iter_current(rtype, since=mark, include_deleted=True)
                if not (row[2] == mark and row[1] in seen)
            )
            folder = lake_dir / rtype / "layer=delta" / f"batch={batch}"
            ids_at = {}
            known = st.get("typed_structure") or None
            typed = (rtype, known) if known else None
            written, removed, high, _ = _write(folder, _batches(_note_ids(rows, ids_at)), tick, typed)
            if written + removed:
                st["delta_batches"] = [*st.get("delta_batches", []), batch]
                st["delta_rows"] = int(st.get("delta_rows", 0)) + written + removed
                st["watermark"] = max(high, mark)
                st["watermark_ids"] = ids_at.get(high, []) + (sorted(seen) if high == mark else [])
                st["next_batch"] = batch + 1
            else:
                shutil.rmtree(folder, ignore_errors=True)
            if st["delta_rows"] > COMPACT_RATIO * max(int(st.get("base_rows", 0)), 1):
                _write_state(lake_dir, state)
                compact(lake_dir, rtype)
                state = read_state(lake_dir)
                tstate = state["types"]
                report.compacted.append(rtype)
        report.written[rtype] = written
        report.deleted[rtype] = removed
        _write_state(lake_dir, state)
    report.seconds = time.perf_counter() - started
    log.info("lake export (%s): %d rows in %.1fs", report.mode, report.total, report.seconds)
    return report


def _remove_layers(type_dir: Path, keep: Path) -> None:
    for layer in type_dir.glob("layer=*"):
        for batch in layer.glob("batch=*"):
            if batch != keep:
                shutil.rmtree(batch, ignore_errors=True)


def compact(lake_dir: Path, resource_type: str) -> None:
    """Fold a type's deltas into a new base snapshot (DuckDB, streaming to Parquet)."""
    import duckdb

    state = read_state(lake_dir)
    st = state["types"][resource_type]
    batch = int(st["next_batch"])
    folder = lake_dir / resource_type / "layer=base" / f"batch={batch}"
    folder.mkdir(parents=True, exist_ok=True)
    target = _quote(str(folder / "part-00000.parquet"))
    con = duckdb.connect()
    try:
        sql = current_sql(lake_dir, resource_type)
        con.execute(
            f"COPY (SELECT c.id, CAST($wm AS DOUBLE) AS last_updated, FALSE AS deleted, "
            f"c.* EXCLUDE (id) FROM ({sql}) AS c) TO {target} (FORMAT parquet, COMPRESSION zstd)",
            {"wm": float(st["watermark"])},
        )
        rows = con.execute(f"SELECT count(*) FROM read_parquet({target})").fetchone()
    finally:
        con.close()
    _remove_layers(lake_dir / resource_type, keep=folder)
    st.update(
        base_batch=batch,
        base_rows=int(rows[0]) if rows else 0,
        delta_batches=[],
        delta_rows=0,
        next_batch=batch + 1,
    )
    _write_state(lake_dir, state)
