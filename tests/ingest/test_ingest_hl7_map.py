"""HL7 v2 mapping of pharmacy dispenses (RDS^O13), which no reference sample carries."""

from __future__ import annotations

from rhip.fhir import systems
from rhip.ingest.model import Record, SourceInfo
from rhip.ingest.pipeline import Pipeline

RDS = (
    "MSH|^~\\&|PHARM|H3|RHIP|R|20261101101500||RDS^O13^RDS_O13|D-1|P|2.5\r"
    "PID|1||M9^^^H3^MR||Wu^Lan||19700101|F\r"
    "ORC|RE|ORD-9\r"
    "RXD|1|D004^盐酸二甲双胍片^H3|20261101101000|90|片\r"
    "RXD|2|D008^阿司匹林肠溶片^H3|20261101101000|30|片\r"
)


def test_rds_o13_gives_one_dispense_per_rxd(sqlite_pipeline: Pipeline) -> None:
    rep = sqlite_pipeline.run(SourceInfo("H3", "hl7v2", "t"), [Record(RDS.encode(), "t:1", key="D-1")])
    assert (rep.stored, rep.quarantined) == (1, 0) and rep.reconciled
    dispenses = sorted(
        (d for d, *_ in sqlite_pipeline.store.iter_current("MedicationDispense") if d),
        key=lambda d: d["quantity"]["value"],
    )
    assert [d["quantity"]["value"] for d in dispenses] == [30, 90]
    metformin = dispenses[1]
    assert metformin["whenHandedOver"] == "2026-11-01T10:10:00+08:00"
    assert metformin["subject"]["reference"].startswith("Patient/")
    codes = {(c["system"], c["code"]) for c in metformin["medicationCodeableConcept"]["coding"]}
    assert (systems.local_code_system("H3", "drug"), "D004") in codes
    assert (systems.ATC, "A10BA02") in codes  # local code translated by the shipped ConceptMap
    again = sqlite_pipeline.run(SourceInfo("H3", "hl7v2", "t"), [Record(RDS.encode(), "t:1", key="D-1")])
    assert again.duplicates == 1 and sqlite_pipeline.store.count("MedicationDispense") == 2
