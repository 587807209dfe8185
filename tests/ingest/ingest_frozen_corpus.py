"""What ingest makes of a broad corpus, digested, so that a faster implementation can be held to it.

The corpus: every record a generated region (``rhip.synth``, 120 residents, one year) yields through
the real connectors (FHIR NDJSON, HL7 v2, CSV, DICOM; device readings when a region has them, one
of this size has none), the FHIR R4 examples and Synthea files under tests/data as NDJSON lines,
and bad inputs: the malformed lines the ingest tests use, plus mutations of generated resources
(wrong JSON types, unknown elements, codes outside their value sets, out-of-range vitals, periods
that end before they start, impossible and HL7-style dates, missing required elements, local codes).

For each record it keeps what the pipeline's preparer decides (stored bodies and warnings, or the
quarantine reasons), the platform validator's issues on the resource as sent, every quality rule's
outcome on the stored resources and the record's Provenance; at the end, the quality tallies per
facility, day and rule. Each record's outputs become a short SHA-256 digest, so the frozen file
stays small while any changed byte shows, with the record that changed it.

``.venv/bin/python tests/ingest/ingest_frozen_corpus.py --write`` regenerates the frozen file (run
it with a tree whose outputs are the reference, never to make a failing comparison pass).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
FROZEN = Path(__file__).resolve().parent / "data" / "frozen_outputs.json"
#: Arrival time of every record (2026-09-21 UTC+8) and the Provenance's recorded time: fixed.
ARRIVAL = 1_790_000_000.0
RECORDED = "2026-09-21T00:00:00.000+00:00"
TZ = "Asia/Shanghai"
#: The day quarantined records are counted on (their arrival is the wall clock): masked.
TODAY = "<today>"
_SYNTH = {"residents": 120, "years": 1, "seed": 11}


@dataclass
class Item:
    """One record of the corpus with the connector that reads it."""

    source: Any  # rhip.ingest.model.SourceInfo
    record: Any  # rhip.ingest.model.Record
    options: dict[str, Any] = field(default_factory=dict)


def _ndjson_items(path: Path, facility: str) -> Iterator[Item]:
    from rhip.ingest import fhir_files
    from rhip.ingest.model import SourceInfo
    from rhip.ingest.runner import _ndjson_records

    source = SourceInfo(facility, fhir_files.NDJSON, path.name)
    for rec in _ndjson_records(path):
        yield Item(source, rec)


def _files(folder: Path, pattern: str) -> list[Path]:
    return sorted(p for p in folder.rglob(pattern) if p.is_file()) if folder.is_dir() else []


def synth_items(region: Path) -> Iterator[Item]:
    """Every record of a generated region, read by the connector ``rhip.ingest.runner`` uses for it."""
    from rhip.ingest import csvmap, device, dicom, hl7v2
    from rhip.ingest.model import SourceInfo
    from rhip.ingest.runner import _jsonl

    for base in ("region", "fhir", "claims"):
        for path in _files(region / base, "*.ndjson"):
            yield from _ndjson_items(path, path.parent.name if base == "fhir" else base)
    for path in _files(region / "hl7v2", "*.hl7"):
        source = SourceInfo(path.parent.name, hl7v2.CONNECTOR, path.name)
        yield from (Item(source, rec) for rec in hl7v2.iter_hl7_file(path))
    mapping = csvmap.load_mapping("community-centre")
    for path in _files(region / "csv", "*.csv"):
        source = SourceInfo(path.parent.name, csvmap.CONNECTOR, path.name)
        yield from (Item(source, rec, {"mapping": mapping}) for rec in csvmap.iter_csv(path, mapping))
    for path in _files(region / "dicom", "*.dcm"):
        source = SourceInfo(path.parent.parent.name, dicom.CONNECTOR, path.parent.name)
        yield from (Item(source, rec) for rec in dicom.iter_dicom_files([path]))
    for path in _files(region / "wearable", "*.jsonl"):
        source = SourceInfo("wearable", device.CONNECTOR, path.name)
        yield from (Item(source, rec) for rec in _jsonl(path))


def _lines(name: str, lines: list[bytes]) -> Iterator[Item]:
    from rhip.ingest import fhir_files
    from rhip.ingest.model import Record, SourceInfo

    source = SourceInfo("EXAMPLES", fhir_files.NDJSON, name)
    for i, line in enumerate(lines):
        yield Item(source, Record(line, f"{name}:{i + 1}"))


def example_items() -> Iterator[Item]:
    """The FHIR R4 examples and the Synthea files under tests/data, each resource as an NDJSON line."""
    sys.path.insert(0, str(ROOT / "tests"))
    from ingest_equivalence import _bundle_entries

    for folder in ("fhir-r4-examples", "synthea-r4"):
        docs = [
            d
            for p in sorted((DATA / folder).glob("*.json"))
            for d in _bundle_entries(orjson.loads(p.read_bytes()))
        ]
        yield from _lines(folder, [orjson.dumps(d) for d in docs])
    for path in sorted((DATA / "synthea-bulk-ndjson").glob("*.ndjson")):
        yield from _lines(path.name, [line for line in path.read_bytes().splitlines() if line.strip()])


#: Lines the ingest tests quarantine (tests/ingest/test_ingest_fhir_files.py, test_ingest_quarantine.py).
BAD_LINES: tuple[bytes, ...] = (
    b'{"resourceType": "Patient", "id": "x1", ',
    b'{"resourceType": "Spaceship", "id": "s1"}',
    b'{"resourceType": "Patient", "id": "x2", "birthDate": 19900101}',
    b'{"resourceType": "Patient", "id": "trunc", "name": [{"fam',
    b'{"resourceType": "Patient", "id": "p1", "gender": "boy"}',
    b'{"resourceType": "Patient", "id": "no spaces allowed", "gender": "female"}',
    b'{"resourceType": "Patient"}',
    b"[1, 2]",
    b"{}",
    b'\xef\xbb\xbf{"resourceType": "Patient", "id": "bom", "gender": "F"}',
    b'{"resourceType": "patient", "id": "lower"}',
    b'{"resourceType": "Patient", "id": 5}',
    b'{"resourceType": "Observation", "id": "o1", "status": "final"}',
    b'{"resourceType": "Observation", "id": "o2", "status": "final", "code": {"text": "x"},'
    b' "valueQuantity": {"value": "7"}}',
    b'{"resourceType": "Observation", "id": "o3", "status": "final", "code": {"coding": [{"system": "http://loinc.org",'
    b' "code": "8867-4"}]}, "valueQuantity": {"value": 400, "unit": "bpm"}, "valueString": "x"}',
    b'{"resourceType": "Encounter", "id": "e1", "status": "finished", "class": {"code": "AMB"},'
    b' "period": {"start": "2026-01-02T10:00:00+08:00", "end": "2026-01-01T10:00:00+08:00"}}',
    b'{"resourceType": "Patient", "id": "d1", "birthDate": "2999-01-01", "gender": "\xe7\x94\xb7"}',
    b'{"resourceType": "Patient", "id": "c1", "identifier": [{"system": "urn:oid:2.16.156.10011.1.1",'
    b' "value": "11010519491231002\xef\xbc\xb8"}], "telecom": {"value": "1"}}',
)


def _mutations(res: dict[str, Any], n: int) -> Iterator[dict[str, Any]]:
    """Broken or unusual variants of one valid resource (deterministic in ``n``)."""
    rtype = res.get("resourceType")
    keys = [k for k in res if k not in ("resourceType", "id", "meta")]
    yield {**res, "unknownElement": {"x": n}}
    if keys:
        key = keys[n % len(keys)]
        yield {**res, key: 12345 if not isinstance(res[key], int) else "12345"}
        yield {k: v for k, v in res.items() if k != key}
        yield {**res, key: [res[key]] if not isinstance(res[key], list) else res[key][0]}
    if "status" in res:
        yield {**res, "status": "not-a-status"}
    if rtype == "Patient":
        yield {
            **res,
            "gender": ("boy", "女", "2", " M ")[n % 4],
            "birthDate": ("1990-02-30", "2999-01-01")[n % 2],
        }
    if rtype == "Observation":
        qty = res.get("valueQuantity")
        if isinstance(qty, dict):
            yield {**res, "valueQuantity": {**qty, "value": (9999, -5, 0.0001)[n % 3], "unit": "mmHg"}}
            yield {**res, "valueQuantity": {k: v for k, v in qty.items() if k not in ("system", "code")}}
        yield {
            **res,
            "effectiveDateTime": ("2026-13-01", "202601011230", "2999-01-01T00:00:00", "2026-02-29")[n % 4],
        }
        yield {
            **res,
            "code": {
                "coding": [{"system": f"https://rhip.example.org/CodeSystem/local/F{n}/lab", "code": "HR"}]
            },
        }
    if rtype == "Encounter" and isinstance(res.get("period"), dict):
        period = res["period"]
        yield {**res, "period": {"start": period.get("end", "2026-01-02"), "end": period.get("start")}}
    if rtype == "Condition":
        yield {
            **res,
            "code": {
                "coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": ("O80", "P07.3")[n % 2]}]
            },
        }


def bad_items(region: Path) -> Iterator[Item]:
    """The ingest tests' bad lines and mutations of every 7th generated FHIR resource."""
    yield from _lines("bad-lines", list(BAD_LINES))
    lines: list[bytes] = []
    n = 0
    for path in _files(region / "fhir", "*.ndjson"):
        for line in path.read_bytes().splitlines()[::7]:
            lines += [orjson.dumps(m) for m in _mutations(orjson.loads(line), n)]
            n += 1
    yield from _lines("mutations", lines)


def corpus(region: Path) -> dict[str, Iterator[Item]]:
    """The corpus by section (``region``: a folder generated with :data:`_SYNTH`)."""
    return {"synth": synth_items(region), "examples": example_items(), "bad": bad_items(region)}


class Digester:
    """Runs each record through the preparer, the validator, the quality rules and Provenance."""

    def __init__(self) -> None:
        from rhip.ingest.canonical import ConceptTranslator
        from rhip.ingest.conceptmaps import shipped_conceptmaps
        from rhip.ingest.pipeline import RecordPreparer
        from rhip.ingest.validate import ResourceValidator
        from rhip.quality.collector import _Tallies

        self.translator = ConceptTranslator(shipped_conceptmaps())
        self.preparer = RecordPreparer(self.translator, TZ, ResourceValidator())
        self.tallies = _Tallies(TZ)

    def outputs(self, item: Item) -> tuple[Any, ...]:
        """Everything ingest derives from one record (see the module docstring)."""
        from rhip.fhir.validation import validate_resource
        from rhip.ingest.mappers import MAPPERS, MapContext, record_key
        from rhip.ingest.provenance import build_provenance, stable_id
        from rhip.quality.rules import RULES

        rec, source = item.record, item.source
        sent = _parsed(rec.raw)
        as_sent = validate_resource(sent) if isinstance(sent, dict) else None
        key = record_key(rec, source)
        ctx = MapContext(source, TZ, self.translator, dict(item.options))
        try:
            mapped, reasons = self.preparer.map_record(rec, key, ctx, MAPPERS[source.connector])
        except Exception as exc:  # a shape the preparer does not survive: that is frozen too
            return (as_sent, "raises", type(exc).__name__)
        if mapped is None:
            self.tallies.on_quarantined(rec, reasons, source)
            return (as_sent, reasons)
        bodies = [orjson.dumps(r) for r in mapped.resources]
        self.tallies.ctx.now = ARRIVAL
        rules = [
            [
                (r.id, r.check(res, self.tallies.ctx))
                for r in RULES.values()
                if res.get("resourceType") in r.resource_types
            ]
            for res in mapped.resources
        ]
        self.tallies.on_stored(rec, mapped, source, ARRIVAL)
        provenance = build_provenance(
            stable_id("prov", key), mapped.resources, source, [f"{source.location}#{rec.position}"], RECORDED
        )
        summary = (mapped.event_time, mapped.merge, mapped.ordered, mapped.bundle is not None)
        return (as_sent, bodies, mapped.warnings, summary, rules, orjson.dumps(provenance))

    def tally_rows(self) -> list[list[Any]]:
        """The quality tallies per (facility, day, rule): checked, failed, delay sum."""
        today = datetime.now(ZoneInfo("Asia/Shanghai")).date().isoformat()  # the tallies' day
        rows = [
            [fac, TODAY if day == today else day, rule, *counts]
            for (fac, day, rule), counts in self.tallies._tally.items()
        ]
        return sorted(rows, key=lambda r: (r[0], r[1], r[2]))


def _parsed(raw: bytes) -> Any:
    try:
        return orjson.loads(raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw)
    except orjson.JSONDecodeError:
        return None


def digest(value: Any) -> str:
    """16 hex digits of the SHA-256 of ``repr(value)`` (repr shows a float or a list/tuple change)."""
    return hashlib.sha256(repr(value).encode()).hexdigest()[:16]


def frozen_outputs(work: Path) -> dict[str, Any]:
    """The digests of every record by section and the quality tallies (``work``: a scratch folder)."""
    from rhip.ingest import runner  # noqa: F401 (registers every mapper)
    from rhip.synth import generate

    region = work / "region"
    generate(region, **_SYNTH)
    digester = Digester()
    sections = {
        name: [digest(digester.outputs(item)) for item in items] for name, items in corpus(region).items()
    }
    return {"sections": sections, "tallies": digester.tally_rows()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help=f"write {FROZEN.relative_to(ROOT)}")
    ap.add_argument("--out", type=Path, help="write to this file instead")
    args = ap.parse_args()
    os.environ.setdefault("RHIP_DATA_DIR", tempfile.mkdtemp(prefix="rhip-frozen-"))
    with tempfile.TemporaryDirectory() as work:
        found = frozen_outputs(Path(work))
    target = args.out or (FROZEN if args.write else None)
    counts = {name: len(d) for name, d in found["sections"].items()}
    print(f"records: {counts}; tally rows: {len(found['tallies'])}")
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(orjson.dumps(found, option=orjson.OPT_INDENT_2) + b"\n")
        print(f"written to {target}")


if __name__ == "__main__":
    main()
