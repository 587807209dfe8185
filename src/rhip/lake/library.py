"""The standard view library and materialised views.

The views applications build on (patients with their resident id, encounters, conditions,
observations, lab results, vital signs, medications, procedures, immunisations, claims and claim
items) are SQL-on-FHIR ViewDefinitions shipped as JSON in ``rhip/lake/views``; a region adds its own
by storing ViewDefinition resources in the platform, which :func:`store_views` reads. Identifier
and code-system URIs that depend on the region's configuration are filled in from
:mod:`rhip.fhir.systems` when the library loads.

Materialisation writes each view as ``<lake>/views/<name>.parquet`` through DuckDB, plus the derived
``patient_demographics`` table that joins source patients to their resident.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rhip.errors import InvalidRequest, InvalidResource
from rhip.lake.compiler import validate_view
from rhip.lake.engine import DuckDBEngine

if TYPE_CHECKING:
    from rhip.store import Store

__all__ = [
    "DERIVED",
    "EXAMPLE_QUERIES",
    "example_queries",
    "load_views",
    "materialize",
    "store_views",
    "view_names",
]

log = logging.getLogger(__name__)

#: Tables derived from materialised views (SQL over view names), written after the views.
DERIVED: dict[str, str] = {
    "patient_demographics": (
        "SELECT p.id AS patient_id, CASE WHEN p.is_golden THEN p.id ELSE l.resident_id END AS resident_id, "
        "coalesce(p.resident_card, l.resident_card) AS resident_card, p.is_golden, p.active, p.gender, "
        "p.birth_date, p.deceased_date, p.name, p.phone, p.address, p.district, p.organization_id "
        "FROM patient AS p LEFT JOIN resident_link AS l ON l.patient_id = p.id"
    ),
}


def _placeholders() -> dict[str, str]:
    from rhip.fhir import systems

    return {
        "__mpi_tag__": systems.MPI_TAG,
        "__vhc__": systems.VIRTUAL_HEALTH_CARD,
        "__citizen_id__": systems.CITIZEN_ID,
    }


def _fill(view: dict[str, Any]) -> dict[str, Any]:
    values = _placeholders()
    out = copy.deepcopy(view)
    for const in out.get("constant", []):
        for key, value in list(const.items()):
            if key.startswith("value") and isinstance(value, str) and value in values:
                const[key] = values[value]
    return out


def load_views() -> dict[str, dict[str, Any]]:
    """The built-in ViewDefinitions by name, with region-specific URIs filled in."""
    out: dict[str, dict[str, Any]] = {}
    folder = resources.files("rhip.lake") / "views"
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".json"):
            view = json.loads(entry.read_text(encoding="utf-8"))
            out[view["name"]] = _fill(view)
    return out


def view_names() -> list[str]:
    """Names of the built-in views and derived tables."""
    return [*load_views(), *DERIVED]


def store_views(store: Store) -> dict[str, dict[str, Any]]:
    """ViewDefinitions stored in the platform (resourceType ViewDefinition), by name; invalid ones skipped."""
    out: dict[str, dict[str, Any]] = {}
    try:
        rows = list(store.iter_current("ViewDefinition"))
    except (InvalidRequest, InvalidResource):
        return out
    for body, res_id, _, _ in rows:
        if body is None:
            continue
        name = str(body.get("name") or res_id)
        try:
            validate_view(body)
        except InvalidResource as exc:
            log.warning("stored ViewDefinition %s skipped: %s", res_id, exc.diagnostics)
            continue
        out[name] = body
    return out


def materialize(
    lake_dir: Path,
    views: dict[str, dict[str, Any]] | None = None,
    *,
    engine: DuckDBEngine | None = None,
    on_view: Callable[[str, int], None] | None = None,
) -> dict[str, int]:
    """Write each view (and the derived tables) as Parquet under ``<lake>/views``; return row counts.

    Views whose resource type is absent from the lake produce empty tables with the right columns.
    """
    views = load_views() if views is None else views
    own = engine is None
    eng = engine or DuckDBEngine()
    out_dir = lake_dir / "views"
    tmp_dir = lake_dir / "views.tmp"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    counts: dict[str, int] = {}
    try:
        eng.attach_lake(lake_dir)
        for name, view in views.items():
            compiled = eng.compile(view)
            target = tmp_dir / f"{name}.parquet"
            eng.con.execute(
                f"COPY ({compiled.sql}) TO {_quote(str(target))} (FORMAT parquet, COMPRESSION zstd)",
                compiled.params or None,
            )
            counts[name] = _count(eng, target)
            eng.con.execute(
                f'CREATE OR REPLACE VIEW "{name}" AS SELECT * FROM read_parquet({_quote(str(target))})'
            )
            if on_view:
                on_view(name, counts[name])
        for name, sql in DERIVED.items():
            if all(dep in views for dep in ("patient", "resident_link")):
                target = tmp_dir / f"{name}.parquet"
                eng.con.execute(f"COPY ({sql}) TO {_quote(str(target))} (FORMAT parquet, COMPRESSION zstd)")
                counts[name] = _count(eng, target)
                if on_view:
                    on_view(name, counts[name])
    finally:
        for name in views:
            eng.con.execute(f'DROP VIEW IF EXISTS "{name}"')
        if own:
            eng.close()
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp_dir.replace(out_dir)
    return counts


#: A few questions the demo asks of the materialised views (title, DuckDB SQL over view names).
EXAMPLE_QUERIES: list[tuple[str, str]] = [
    (
        "Encounters by class",
        "SELECT class_code, count(*) AS encounters FROM encounter GROUP BY 1 ORDER BY 2 DESC",
    ),
    (
        "Top diagnoses (ICD-10)",
        "SELECT code, any_value(display) AS display, count(*) AS n FROM condition "
        "GROUP BY 1 ORDER BY 3 DESC LIMIT 5",
    ),
    (
        "Vital signs: mean value by LOINC code",
        "SELECT loinc, any_value(display) AS display, count(*) AS n, round(avg(value), 1) AS mean, "
        "any_value(unit) AS unit FROM vital_signs GROUP BY 1 ORDER BY 3 DESC LIMIT 5",
    ),
    (
        "Residents with records in more than one facility",
        "SELECT count(*) AS residents FROM (SELECT resident_id FROM patient_demographics "
        "WHERE resident_id IS NOT NULL AND NOT is_golden GROUP BY 1 HAVING count(*) > 1)",
    ),
    (
        "Claims: total cost by claim type (CNY)",
        "SELECT type, count(*) AS claims, round(sum(total), 2) AS total FROM claim "
        "GROUP BY 1 ORDER BY 3 DESC",
    ),
]


def example_queries(lake_dir: Path) -> list[tuple[str, list[str], list[tuple[Any, ...]]]]:
    """Run :data:`EXAMPLE_QUERIES` over the materialised views: (title, columns, rows) each."""
    import duckdb

    con = duckdb.connect()
    out: list[tuple[str, list[str], list[tuple[Any, ...]]]] = []
    try:
        for path in sorted((lake_dir / "views").glob("*.parquet")):
            con.execute(f'CREATE VIEW "{path.stem}" AS SELECT * FROM read_parquet({_quote(str(path))})')
        for title, sql in EXAMPLE_QUERIES:
            try:
                cur = con.execute(sql)
            except duckdb.Error as exc:
                log.warning("example query %r failed: %s", title, str(exc).splitlines()[0])
                continue
            out.append((title, [d[0] for d in cur.description or []], cur.fetchall()))
    finally:
        con.close()
    return out


def _count(eng: DuckDBEngine, target: Path) -> int:
    row = eng.con.execute(f"SELECT count(*) FROM read_parquet({_quote(str(target))})").fetchone()
    return int(row[0]) if row else 0


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
