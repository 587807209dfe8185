"""Compare RHIP's view compiler with other SQL-on-FHIR runners from PyPI on the same data.

The other runners live in a separate virtualenv (they pin their own DuckDB and friends), so each
runs in a child process of that environment, times only its own view evaluation, and writes its
rows to JSON; this script then compares row multisets with RHIP's result and prints a table.

    python3 -m venv /tmp/sof && /tmp/sof/bin/pip install fhir4ds-v2==0.0.17 pysof==0.2.6
    # pysof's wheel bundles a libcrypto/libssl built for a newer glibc; use the system's instead:
    cd /tmp/sof/lib/python3.11/site-packages/pysof.libs
    cp /usr/lib/x86_64-linux-gnu/libcrypto.so.3 libcrypto-*.so.3
    cp /usr/lib/x86_64-linux-gnu/libssl.so.3 libssl-*.so.3
    .venv/bin/python benchmarks/lake_runners.py --other-python /tmp/sof/bin/python --observations 50000

pathling is not included: its Spark session downloads jars when it starts, which this offline
machine cannot do.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb

from rhip.lake.engine import DuckDBEngine
from rhip.lake.library import load_views

CHILD = r"""
import json, sys, time
runner, ndjson, view_path, out_path = sys.argv[1:5]
view = json.load(open(view_path))
lines = open(ndjson, encoding="utf-8").read().splitlines()
if runner == "pysof":
    import pysof
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": json.loads(line)} for line in lines]}
    raw = json.dumps(bundle)
    start = time.perf_counter()
    out = pysof.run_view_definition(view, raw, "json")
    seconds = time.perf_counter() - start
    rows = json.loads(out)
elif runner == "fhir4ds":
    view["resourceType"] = "https://sql-on-fhir.org/ig/StructureDefinition/ViewDefinition"
    from fhir4ds import FHIRDataLoader, create_connection, generate_view_sql
    con = create_connection()
    FHIRDataLoader(con).load_ndjson(ndjson)
    sql = generate_view_sql(view)
    start = time.perf_counter()
    cur = con.execute(sql)
    names = [d[0] for d in cur.description]
    rows = [dict(zip(names, r)) for r in cur.fetchall()]
    seconds = time.perf_counter() - start
else:
    raise SystemExit("unknown runner")
json.dump({"seconds": seconds, "rows": rows}, open(out_path, "w"), default=str)
"""

VITALS_SIMPLE = {
    "resourceType": "ViewDefinition",
    "name": "vitals_simple",
    "resource": "Observation",
    "select": [
        {
            "column": [
                {"name": "id", "path": "id", "type": "id"},
                {"name": "subject", "path": "subject.reference", "type": "string"},
                {"name": "code", "path": "code.coding.first().code", "type": "code"},
                {"name": "effective", "path": "effective.ofType(dateTime)", "type": "dateTime"},
                {"name": "value", "path": "value.ofType(Quantity).value", "type": "decimal"},
                {"name": "unit", "path": "value.ofType(Quantity).code", "type": "code"},
            ]
        }
    ],
    "where": [{"path": "category.coding.where(code = 'vital-signs').exists()"}],
}

PATIENT_SIMPLE = {
    "resourceType": "ViewDefinition",
    "name": "patient_simple",
    "resource": "Patient",
    "select": [
        {
            "column": [
                {"name": "id", "path": "id", "type": "id"},
                {"name": "gender", "path": "gender", "type": "code"},
                {"name": "birth_date", "path": "birthDate", "type": "date"},
                {"name": "family", "path": "name.first().family", "type": "string"},
            ]
        }
    ],
}


def _generate(folder: Path, observations: int, patients: int) -> dict[str, Path]:
    from lake_flatten import OBS_JSON, PAT_JSON  # sibling script (the script's folder is on sys.path)

    con = duckdb.connect()
    paths = {}
    for rtype, n, body in (("Observation", observations, OBS_JSON), ("Patient", patients, PAT_JSON)):
        target = folder / f"{rtype}.ndjson"
        con.execute(
            f"COPY (SELECT {body} AS line FROM range($n) t(i)) "
            f"TO '{target}' (FORMAT csv, HEADER false, QUOTE '')",
            {"n": n, "patients": patients} if rtype == "Observation" else {"n": n},
        )
        paths[rtype] = target
    return paths


def _key(row: dict[str, Any], columns: list[str]) -> tuple[Any, ...]:
    out = []
    for c in columns:
        v = row.get(c)
        if isinstance(v, float):
            v = round(v, 6)
        elif isinstance(v, str):
            with contextlib.suppress(ValueError):
                v = round(float(v), 6) if c == "value" else v
        out.append(v)
    return tuple(out)


def _ours(view: dict[str, Any], ndjson: Path) -> tuple[float, list[dict[str, Any]]]:
    engine = DuckDBEngine(threads=2)
    rows = [json.loads(line) for line in ndjson.read_text(encoding="utf-8").splitlines()]
    engine.load_resources(rows)
    compiled = engine.compile(view)
    start = time.perf_counter()
    cur = engine.con.execute(compiled.sql, compiled.params or None)
    result = [dict(zip(compiled.column_names, r, strict=True)) for r in cur.fetchall()]
    seconds = time.perf_counter() - start
    engine.close()
    return seconds, result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--other-python", default="/tmp/lake_sof_venv/bin/python")
    parser.add_argument("--observations", type=int, default=50_000)
    parser.add_argument("--patients", type=int, default=10_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lake-runners-"))
    data = _generate(work, args.observations, args.patients)
    views = {
        "vital_signs": load_views()["vital_signs"],
        "vitals_simple": VITALS_SIMPLE,
        "patient_simple": PATIENT_SIMPLE,
    }
    print(f"{'view':<16}{'runner':<10}{'rows':>9}{'seconds':>9}{'res/s':>11}{'vs rhip':>9}  agrees")
    for name, view in views.items():
        ndjson = data[view["resource"]]
        n_in = args.observations if view["resource"] == "Observation" else args.patients
        ours_s, ours_rows = _ours(view, ndjson)
        columns = [c["name"] for c in view["select"][0]["column"]]
        want = Counter(_key(r, columns) for r in ours_rows)
        print(
            f"{name:<16}{'rhip':<10}{len(ours_rows):>9,}{ours_s:>9.2f}{n_in / ours_s:>11,.0f}{1.0:>9.2f}  -"
        )
        view_path = work / f"{name}.json"
        view_path.write_text(json.dumps(view))
        for runner in ("fhir4ds", "pysof"):
            out = work / f"{name}-{runner}.json"
            proc = subprocess.run(
                [args.other_python, "-c", CHILD, runner, str(ndjson), str(view_path), str(out)],
                capture_output=True, text=True, timeout=1800,
            )  # fmt: skip
            if proc.returncode != 0:
                reason = (proc.stderr.strip().splitlines() or ["failed"])[-1][:70]
                print(f"{name:<16}{runner:<10}{'-':>9}{'-':>9}{'-':>11}{'-':>9}  failed: {reason}")
                continue
            got = json.loads(out.read_text())
            rows = got["rows"]
            agree = Counter(_key(r, columns) for r in rows) == want
            sec = got["seconds"]
            print(
                f"{name:<16}{runner:<10}{len(rows):>9,}{sec:>9.2f}{n_in / sec:>11,.0f}"
                f"{ours_s / sec:>9.2f}  {agree}"
            )


if __name__ == "__main__":
    main()
