"""Derive the small HL7 tables the FHIR REST API ships with, from the R4 definition files.

Run by developers when the definitions change (the product never reads /work/shared at run time):

    .venv/bin/python scripts/gen_api_data.py [--source /work/shared/fhir-r4]

Writes ``src/rhip/api/data/patient_compartment.json`` (resource type -> search parameters that
link it to a Patient, from the Patient CompartmentDefinition) and
``src/rhip/api/data/resource_elements.json`` (per resource type: every top-level element, the
ones marked ``isSummary`` and the mandatory ones, used for ``_summary`` and ``_elements``).
Both are HL7 FHIR R4 4.0.1 content, published under CC0.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "src" / "rhip" / "api" / "data"


def compartment(source: Path) -> dict[str, list[str]]:
    """Resource type -> the search parameters that put it in a Patient's compartment."""
    definition = json.loads((source / "compartmentdefinition-patient.json").read_text())
    return {r["code"]: list(r["param"]) for r in definition["resource"] if r.get("param")}


def elements(source: Path) -> dict[str, dict[str, list[str]]]:
    """Resource type -> {"all": [...], "summary": [...], "mandatory": [...]} top-level element names."""
    bundle = json.loads((source / "profiles-resources.json").read_text())
    table: dict[str, dict[str, list[str]]] = {}
    for entry in bundle["entry"]:
        sd = entry["resource"]
        if sd.get("resourceType") != "StructureDefinition" or sd.get("kind") != "resource":
            continue
        if sd.get("abstract"):
            continue
        name = sd["type"]
        rows: dict[str, list[str]] = {"all": [], "summary": [], "mandatory": []}
        for el in sd["snapshot"]["element"]:
            parts = el["path"].split(".")
            if len(parts) != 2:
                continue
            rows["all"].append(parts[1])
            if el.get("isSummary"):
                rows["summary"].append(parts[1])
            if el.get("min", 0) >= 1:
                rows["mandatory"].append(parts[1])
        table[name] = rows
    return dict(sorted(table.items()))


def main() -> None:
    """Write both tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("/work/shared/fhir-r4"))
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "patient_compartment.json").write_text(json.dumps(compartment(args.source), indent=1) + "\n")
    (OUT / "resource_elements.json").write_text(
        json.dumps(elements(args.source), separators=(",", ":")) + "\n"
    )


if __name__ == "__main__":
    main()
