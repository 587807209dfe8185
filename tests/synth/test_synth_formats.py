"""Every emitted format parses with an independent reader, and the truth matches the emitted data."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import jsonschema
import orjson
import pydicom
import pytest
from hl7apy.parser import parse_message

from rhip.fhir import systems
from rhip.fhir.identifiers import check_citizen_id
from rhip.fhir.validation import validate_resource
from rhip.synth import Manifest
from rhip.synth.writers.csv_extract import layout

pytestmark = pytest.mark.xdist_group("synth")
SCHEMA = Path(__file__).parents[1] / "data" / "fhir-r4-schema" / "fhir.schema.json.gz"


def _csv(path: Path, encoding: str = "utf-8") -> list[dict[str, str]]:
    with path.open(encoding=encoding, newline="") as fh:
        return list(csv.DictReader(fh))


def _ndjson(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_all_fhir_validates_against_r4(synth_region: tuple[Path, Manifest]) -> None:
    out, _ = synth_region
    files = (
        sorted(out.glob("fhir/*/*.ndjson"))
        + sorted(out.glob("region/*.ndjson"))
        + [out / "claims/Claim.ndjson"]
    )
    types = set()
    count = 0
    for path in files:
        for res in _ndjson(path):
            issues = validate_resource(res)
            assert not issues, (path.name, res["id"], issues[:3])
            types.add(res["resourceType"])
            count += 1
    assert {
        "Patient",
        "Encounter",
        "Condition",
        "Observation",
        "MedicationRequest",
        "MedicationDispense",
        "Procedure",
        "ImagingStudy",
        "Organization",
        "Practitioner",
        "Claim",
        "Coverage",
    } <= types
    bundles = sorted(out.glob("fhir-bundles/*/*.json"))
    assert bundles
    for path in bundles:
        bundle = orjson.loads(path.read_bytes())
        assert bundle["type"] == "transaction"
        assert not validate_resource(bundle)


def test_fhir_sample_validates_against_hl7_json_schema(synth_region: tuple[Path, Manifest]) -> None:
    out, _ = synth_region
    schema = json.loads(gzip.decompress(SCHEMA.read_bytes()))
    validator = jsonschema.Draft6Validator(schema)
    seen: dict[str, int] = {}
    for path in [*sorted(out.glob("fhir/*/*.ndjson")), out / "claims/Claim.ndjson"]:
        for res in _ndjson(path)[:3]:
            errors = list(validator.iter_errors(res))
            assert not errors, (path.name, errors[0].message[:200])
            seen[res["resourceType"]] = seen.get(res["resourceType"], 0) + 1
    assert len(seen) >= 8


def test_hl7v2_messages_parse_with_hl7apy(synth_region: tuple[Path, Manifest]) -> None:
    out, _ = synth_region
    controls: set[str] = set()
    sample: dict[str, list[str]] = {}
    files = sorted(out.glob("hl7v2/*/messages.hl7"))
    assert files
    for path in files:
        for raw in path.read_bytes().decode("utf-8").split("\r\n"):
            if not raw:
                continue
            assert raw.startswith("MSH|") and "\n" not in raw
            msh = raw.split("\r", 1)[0].split("|")
            assert msh[9] not in controls  # MSH-10 unique
            controls.add(msh[9])
            bucket = sample.setdefault(msh[8], [])
            if len(bucket) < 6:  # hl7apy is slow: parse a few of every message type
                bucket.append(raw)
    assert {
        "ADT^A28^ADT_A05",
        "ADT^A04^ADT_A01",
        "ADT^A08^ADT_A01",
        "ADT^A01^ADT_A01",
        "ADT^A03^ADT_A03",
        "ORU^R01^ORU_R01",
        "RDE^O11^RDE_O11",
    } <= set(sample)
    for mtype, raws in sample.items():
        for raw in raws:
            msg = parse_message(raw.rstrip("\r"), find_groups=False)
            assert msg.msh.msh_9.to_er7() == mtype
            pid = [seg for seg in msg.children if seg.name in ("PID",)]
            assert pid and pid[0].pid_3.to_er7()


def test_csv_extracts_follow_layout_and_encoding(synth_region: tuple[Path, Manifest]) -> None:
    out, _ = synth_region
    facilities = {f["code"]: f for f in _csv(out / "region/facilities.csv")}
    tables = layout()["tables"]
    encodings = set()
    for code, fac in facilities.items():
        if fac["native_system"] != "csv":
            continue
        encodings.add(fac["encoding"])
        for spec in tables.values():
            rows_path = out / "csv" / code / spec["file"]
            with rows_path.open(encoding=fac["encoding"], newline="") as fh:
                header = next(csv.reader(fh))
            assert header == [c["name"] for c in spec["columns"]]
        persons = _csv(out / "csv" / code / "person.csv", fac["encoding"])
        visits = _csv(out / "csv" / code / "visit.csv", fac["encoding"])
        ids = {p["档案编号"] for p in persons}
        assert {v["档案编号"] for v in visits} <= ids
    assert encodings == {"gbk", "utf-8"}


def test_dicom_files_read_with_pydicom(synth_region: tuple[Path, Manifest]) -> None:
    out, _ = synth_region
    index = _csv(out / "dicom/studies.csv")
    assert index
    for row in index[:40]:
        ds = pydicom.dcmread(out / row["path"])
        assert ds.StudyInstanceUID == row["study_uid"]
        assert ds.PatientID == row["patient_id"] and ds.IssuerOfPatientID == row["facility_code"]
        assert ds.pixel_array.shape == (8, 8)


#: Body Part Examined of each imaging procedure of the catalogue (ICD-9-CM-3 code).
BODY_PART = {"87.4401": "CHEST", "87.4100": "CHEST", "87.0300x001": "HEAD", "88.7600x001": "ABDOMEN"}


def test_dicom_body_part_follows_the_procedure_and_fhir_names_the_same(
    synth_region: tuple[Path, Manifest],
) -> None:
    """A chest CT is CHEST, not HEAD; a FHIR-native facility's ImagingStudy of the same study codes
    the same part in series.bodySite (the SNOMED CT code DICOM gives it)."""
    from rhip.synth.writers.fhir import BODY_SITES

    out, _ = synth_region
    parts: dict[str, str] = {}
    kinds: set[tuple[str, str]] = set()
    for row in _csv(out / "dicom/studies.csv"):
        ds = pydicom.dcmread(out / row["path"], stop_before_pixels=True)
        procedure = ds.ProcedureCodeSequence[0].CodeValue
        assert ds.BodyPartExamined == BODY_PART[procedure], (procedure, ds.BodyPartExamined)
        parts[ds.SeriesInstanceUID] = ds.BodyPartExamined
        kinds.add((ds.Modality, ds.BodyPartExamined))
    assert {("CT", "CHEST"), ("CT", "HEAD"), ("DX", "CHEST"), ("US", "ABDOMEN")} <= kinds
    seen = 0
    for path in out.glob("fhir/*/ImagingStudy.ndjson"):
        for line in path.read_bytes().splitlines():
            study = orjson.loads(line)
            for series in study["series"]:
                code, display = BODY_SITES[parts[series["uid"]]]
                assert series["bodySite"] == {"system": systems.SNOMED, "code": code, "display": display}
                seen += 1
    assert seen


WEARABLE_SCHEMA = {
    "type": "object",
    "required": ["device_id", "patient", "timestamp", "measurements"],
    "properties": {
        "device_id": {"type": "string"},
        "patient": {"type": "object", "required": ["system", "value"]},
        "timestamp": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+08:00$"},
        "measurements": {
            "type": "array",
            "minItems": 3,
            "items": {
                "type": "object",
                "required": ["system", "code", "value", "unit"],
                "properties": {"system": {"const": "http://loinc.org"}, "value": {"type": "number"}},
            },
        },
    },
}


def test_wearable_messages_and_deteriorations(synth_region: tuple[Path, Manifest]) -> None:
    out, _ = synth_region
    devices = _csv(out / "wearable/devices.csv")
    assert devices
    validator = jsonschema.Draft7Validator(WEARABLE_SCHEMA)
    for dev in devices:
        msgs = [
            orjson.loads(line)
            for line in (out / "wearable" / f"{dev['device_id']}.jsonl").read_bytes().splitlines()
        ]
        assert len(msgs) == int(dev["minutes"])
        for m in msgs[:50]:
            assert not list(validator.iter_errors(m))
    for det in _csv(out / "truth/deteriorations.csv"):
        msgs = [
            orjson.loads(line)
            for line in (out / "wearable" / f"{det['device_id']}.jsonl").read_bytes().splitlines()
        ]
        inside = [m for m in msgs if det["start"] <= m["timestamp"] < det["end"]]
        outside = [m for m in msgs if m["timestamp"] < det["start"]]
        code = {
            "hypoxaemia": "59408-5",
            "tachycardia": "8867-4",
            "fever": "8867-4",
            "hypertensive-crisis": "8867-4",
        }[det["kind"]]

        def mean(ms: list[dict], code: str = code) -> float:
            vals = [x["value"] for m in ms for x in m["measurements"] if x["code"] == code]
            return sum(vals) / len(vals)

        late = inside[len(inside) // 2 :]
        if det["kind"] == "hypoxaemia":
            assert mean(late) < mean(outside) - 5
        else:
            assert mean(late) > mean(outside) + 5


def test_truth_links_match_emitted_patient_records(synth_region: tuple[Path, Manifest]) -> None:
    out, _ = synth_region
    links = _csv(out / "truth/patient_links.csv")
    by_fac: dict[str, set[str]] = {}
    for link in links:
        by_fac.setdefault(link["facility_code"], set()).add(link["source_patient_id"])
    facilities = {f["code"]: f for f in _csv(out / "region/facilities.csv")}
    residents = {r["resident_id"]: r for r in _csv(out / "truth/residents.csv")}
    for code, ids in by_fac.items():
        fac = facilities[code]
        if fac["native_system"] == "fhir":
            patients = _ndjson(out / "fhir" / code / "Patient.ndjson")
            emitted = {p["id"] for p in patients}
            link_of = {link["source_patient_id"]: link for link in links if link["facility_code"] == code}
            for p in patients:  # clean records carry their resident's valid number; typos fail GB 11643
                cid = next((i["value"] for i in p["identifier"] if i["system"] == systems.CITIZEN_ID), None)
                link = link_of[p["id"]]
                true_id = residents[link["resident_id"]]["citizen_id"]
                if "missing-citizen-id" in link["noise"]:
                    assert cid is None
                elif "citizen-id-typo" in link["noise"]:
                    assert cid != true_id and len(cid or "") == 18
                else:
                    assert cid == true_id and check_citizen_id(cid).valid
        elif fac["native_system"] == "csv":
            emitted = {p["档案编号"] for p in _csv(out / "csv" / code / "person.csv", fac["encoding"])}
        else:
            emitted = set()
            for raw in (out / "hl7v2" / code / "messages.hl7").read_bytes().decode("utf-8").split("\r\n"):
                for seg in raw.split("\r"):
                    if seg.startswith("PID|"):
                        emitted.add(seg.split("|")[3].split("^")[0])
        assert emitted == ids, code
    clean = [link for link in links if not link["noise"]]
    assert clean and all(link["resident_id"] in residents for link in clean)


def test_claims_truth_and_notifiable_cases_point_at_emitted_records(
    synth_region: tuple[Path, Manifest],
) -> None:
    out, manifest = synth_region
    claims = {c["id"]: c for c in _ndjson(out / "claims/Claim.ndjson")}
    anomalies = _csv(out / "truth/claim_anomalies.csv")
    assert anomalies
    for a in anomalies:
        assert a["claim_id"] in claims
        if a["kind"] == "duplicate_billing":
            assert claims[a["duplicate_of"]]["total"] == claims[a["claim_id"]]["total"]
    fhir_encounters = {e["id"] for path in out.glob("fhir/*/Encounter.ndjson") for e in _ndjson(path)}
    cases = _csv(out / "truth/notifiable_cases.csv")
    facilities = {f["code"]: f["native_system"] for f in _csv(out / "region/facilities.csv")}
    fhir_cases = [c for c in cases if facilities[c["facility_code"]] == "fhir"]
    assert fhir_cases and all(c["encounter_id"] in fhir_encounters for c in fhir_cases)
    assert manifest.files["truth/residents.csv"] == 1200
    assert json.loads((out / "manifest.json").read_text())["seed"] == 7
