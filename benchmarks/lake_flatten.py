"""Flatten generated Observations and Patients with compiled ViewDefinitions vs hand-written DuckDB SQL.

Generates a Parquet lake in the export layout (JSON text plus the typed copy the export writes, see
``rhip.lake.typed_copy``) and, from the same data, a separate hand-made typed table (nested struct
columns inferred from the data); then materialises

* the library's ``vital_signs`` and ``lab_results`` views and a simple Patient view, compiled from
  their ViewDefinitions and run over the lake (column "typed": whether the view read the typed copy),
* the same views written by hand in DuckDB SQL over the hand-made typed table (the lab view's
  referenceRange and valueString, absent from the generated data, are NULL constants there), and
* the compiled views reading the JSON text only (the lake before the typed copy; --skip-json omits),

reporting resources/s and the ratio compiled/hand-written (target: >= 0.5), plus the time to
flatten all Observations into the vital-signs + lab views (target: 10M in <= 60 s on 2 cores).

    .venv/bin/python benchmarks/lake_flatten.py --observations 1000000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import duckdb

from rhip.lake.compiler import compile_view
from rhip.lake.engine import DuckDBEngine
from rhip.lake.library import load_views
from rhip.lake.typed_copy import TYPED_COLUMN, infer_structure, structure_sql_text

PATIENT_VIEW = {
    "resourceType": "ViewDefinition",
    "resource": "Patient",
    "select": [
        {
            "column": [
                {"name": "id", "path": "getResourceKey()", "type": "id"},
                {"name": "gender", "path": "gender", "type": "code"},
                {"name": "birth_date", "path": "birthDate", "type": "date"},
                {"name": "family", "path": "name.first().family", "type": "string"},
                {"name": "organization_id", "path": "managingOrganization.getReferenceKey(Organization)"},
            ]
        }
    ],
}

OBS_JSON = """
json_object(
  'resourceType', 'Observation', 'id', 'o' || i, 'status', 'final',
  'category', [json_object('coding', [json_object(
      'system', 'http://terminology.hl7.org/CodeSystem/observation-category',
      'code', CASE WHEN i % 3 = 0 THEN 'laboratory' ELSE 'vital-signs' END)])],
  'code', json_object('coding', [json_object('system', 'http://loinc.org', 'code', '8480-' || (i % 7),
      'display', 'Systolic blood pressure')], 'text', '收缩压'),
  'subject', json_object('reference', 'Patient/p' || (i % $patients)),
  'encounter', json_object('reference', 'Encounter/e' || (i // 5)),
  'effectiveDateTime', strftime(TIMESTAMP '2024-01-01' + to_seconds(i % 31536000), '%Y-%m-%dT%H:%M:%S+08:00'),
  'valueQuantity', json_object('value', round(90 + (hash(i) % 6000) / 100.0, 2), 'unit', 'mmHg',
      'system', 'http://unitsofmeasure.org', 'code', 'mm[Hg]'),
  'interpretation', [json_object('coding', [json_object('code', 'N')])]
)::VARCHAR"""

PAT_JSON = """
json_object('resourceType', 'Patient', 'id', 'p' || i,
  'gender', CASE WHEN i % 2 = 0 THEN 'male' ELSE 'female' END,
  'birthDate', strftime(DATE '1940-01-01' + to_days(i % 25000), '%Y-%m-%d'),
  'name', [json_object('family', '王', 'given', ['伟'], 'text', '王伟')],
  'managingOrganization', json_object('reference', 'Organization/org' || (i % 50)))::VARCHAR"""

HAND_VITALS = """
SELECT id, split_part(r.subject.reference, '/', 2) AS patient_id, split_part(r.encounter.reference, '/', 2)
  AS encounter_id, r.status,
  list_filter(r.code.coding, lambda c: c.system = 'http://loinc.org')[1].code AS loinc,
  r.code.coding[1].display AS display, r.code.text AS text, r.effectiveDateTime AS effective,
  r.valueQuantity.value AS value, r.valueQuantity.code AS unit
FROM typed_obs WHERE list_contains(list_transform(r.category, lambda c: c.coding[1].code), '{cat}')"""

HAND_LAB = """
SELECT id, split_part(r.subject.reference, '/', 2) AS patient_id, split_part(r.encounter.reference, '/', 2)
  AS encounter_id, r.status, r.category[1].coding[1].code AS category,
  list_filter(r.code.coding, lambda c: c.system = 'http://loinc.org')[1].code AS loinc,
  r.code.coding[1].display AS display, r.code.text AS text, r.effectiveDateTime AS effective,
  r.valueQuantity.value AS value, r.valueQuantity.code AS unit, NULL::VARCHAR AS value_string,
  NULL::DOUBLE AS ref_low, NULL::DOUBLE AS ref_high, r.interpretation[1].coding[1].code AS interpretation
FROM typed_obs WHERE list_contains(list_transform(r.category, lambda c: c.coding[1].code), 'laboratory')"""

HAND_PATIENT = """
SELECT id, r.gender, r.birthDate AS birth_date, r.name[1].family AS family,
  split_part(r.managingOrganization.reference, '/', 2) AS organization_id FROM typed_pat"""


def _generate(lake: Path, observations: int, patients: int) -> dict[str, dict[str, object]]:
    """Write the lake; return per type the export layout's typed-copy structure."""
    con = duckdb.connect()
    structures: dict[str, dict[str, object]] = {}
    for rtype, n, body in (("Observation", observations, OBS_JSON), ("Patient", patients, PAT_JSON)):
        folder = lake / rtype / "layer=base" / "batch=0"
        folder.mkdir(parents=True)
        prefix = "'o'" if rtype == "Observation" else "'p'"
        raw = lake.parent / f"raw_{rtype.lower()}.parquet"
        sql = (
            f"COPY (SELECT {prefix} || i AS id, 0.0::DOUBLE AS last_updated, "
            f"FALSE AS deleted, {body} AS resource FROM range($n) t(i)) "
            f"TO '{raw}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 100000)"
        )
        params = {"n": n, "patients": patients} if rtype == "Observation" else {"n": n}
        con.execute(sql, params)
        # What the export does: the JSON text plus the typed copy (rhip.lake.typed_copy).
        start = time.perf_counter()
        con.execute(f"CREATE OR REPLACE VIEW raw_ AS SELECT * FROM '{raw}'")
        structures[rtype] = infer_structure(con, "raw_", rtype)
        con.execute(
            f"COPY (SELECT *, json_transform(resource, {structure_sql_text(structures[rtype])}) "
            f"AS {TYPED_COLUMN} FROM raw_) TO '{folder}/part-00000.parquet' "
            "(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 100000)"
        )
        print(f"typed copy of {n:,} {rtype} at export: {time.perf_counter() - start:.1f}s")
        typed = lake.parent / f"typed_{rtype.lower()}.parquet"
        con.execute(
            f"COPY (SELECT id, CAST(json(resource) AS {_struct(con, raw)}) AS r "
            f"FROM '{raw}') TO '{typed}' (FORMAT parquet, COMPRESSION zstd)"
        )
    fresh = {
        "base_batch": 0,
        "base_rows": 0,
        "delta_batches": [],
        "delta_rows": 0,
        "next_batch": 1,
        "watermark": 0.0,
    }
    state = {"types": {t: {**fresh, "typed_structure": structures[t]} for t in ("Observation", "Patient")}}
    (lake / "_state.json").write_text(json.dumps(state))
    con.close()
    return structures


def _struct(con: duckdb.DuckDBPyConnection, raw: Path) -> str:
    row = con.execute(f"SELECT json_structure(json(resource)) FROM '{raw}' LIMIT 1").fetchone()
    struct = json.loads(row[0]) if row else {}
    return _sql_type(struct)


def _sql_type(node: object) -> str:
    if isinstance(node, dict):
        return "STRUCT(" + ", ".join(f'"{k}" {_sql_type(v)}' for k, v in node.items()) + ")"
    if isinstance(node, list):
        return _sql_type(node[0]) + "[]"
    return {"VARCHAR": "VARCHAR", "DOUBLE": "DOUBLE", "UBIGINT": "BIGINT", "BIGINT": "BIGINT"}.get(
        str(node), "VARCHAR"
    )


def _time_copy(
    con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, object], out: Path
) -> tuple[float, int]:
    start = time.perf_counter()
    con.execute(f"COPY ({sql}) TO '{out}' (FORMAT parquet)", params or None)
    seconds = time.perf_counter() - start
    row = con.execute(f"SELECT count(*) FROM '{out}'").fetchone()
    return seconds, int(row[0]) if row else 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--observations", type=int, default=500_000)
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-json", action="store_true", help="do not time the JSON-text path")
    parser.add_argument("--workdir", type=Path, default=None, help="keep data here (default: temp dir)")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="lake-bench-"))
    lake = work / "lake"
    t0 = time.perf_counter()
    if not (lake / "_state.json").exists():
        _generate(lake, args.observations, args.patients)
    print(f"data: {args.observations:,} Observations, {args.patients:,} Patients in {work} "
          f"(generated in {time.perf_counter() - t0:.1f}s)")  # fmt: skip
    engine = DuckDBEngine(threads=args.threads)
    engine.attach_lake(lake)
    con = engine.con
    con.execute(f"CREATE VIEW typed_obs AS SELECT * FROM '{work}/typed_observation.parquet'")
    con.execute(f"CREATE VIEW typed_pat AS SELECT * FROM '{work}/typed_patient.parquet'")
    views = load_views()
    cases = [
        ("vital_signs", views["vital_signs"], HAND_VITALS.format(cat="vital-signs"), args.observations),
        ("lab_results", views["lab_results"], HAND_LAB, args.observations),
        ("patient", PATIENT_VIEW, HAND_PATIENT, args.patients),
    ]
    print(
        f"{'view':<14}{'rows':>11}{'compiled s':>12}{'hand s':>9}{'compiled res/s':>16}"
        f"{'hand res/s':>13}{'ratio':>7}{'typed':>7}{'json-text s':>13}{'json ratio':>12}"
    )
    flatten_total = 0.0
    for name, view, hand, n_in in cases:
        compiled = engine.compile(view)
        typed = f"{TYPED_COLUMN} AS t_" in compiled.sql
        c_sec, c_rows = _time_copy(con, compiled.sql, compiled.params, work / f"c_{name}.parquet")
        h_sec, h_rows = _time_copy(con, hand, {}, work / f"h_{name}.parquet")
        j_text = "-"
        if not args.skip_json:
            # The same view reading only the JSON text (what the lake did before the typed copy).
            plain = compile_view(view, "duckdb", source=f"fhir_{view['resource'].lower()}")
            j_sec, j_rows = _time_copy(con, plain.sql, plain.params, work / f"j_{name}.parquet")
            j_text = f"{j_sec:>13.2f}{h_sec / j_sec:>12.2f}" + ("" if j_rows == c_rows else " !!")
        if c_rows != h_rows:
            print(f"  !! {name}: compiled {c_rows} rows vs hand-written {h_rows}")
        if name != "patient":
            flatten_total += c_sec
        print(f"{name:<14}{c_rows:>11,}{c_sec:>12.2f}{h_sec:>9.2f}"
              f"{n_in / c_sec:>16,.0f}{n_in / h_sec:>13,.0f}"
              f"{h_sec / c_sec:>7.2f}{'yes' if typed else 'no':>7}{j_text}")  # fmt: skip
    rate = args.observations / flatten_total
    print(f"flatten all Observations into vital-signs + lab views: {flatten_total:.1f}s "
          f"({rate:,.0f} Observations/s; 10M extrapolated: {10_000_000 / rate:.0f}s)")  # fmt: skip
    engine.close()


if __name__ == "__main__":
    main()
