"""A DICOM study's subject is the facility's own Patient record of the person, by id and identifier.

The PACS names the patient by Patient ID and Issuer; the study references the Patient the
facility's HIS feed gives that person (``stable_id("Patient", facility, key)`` of the HL7 v2
connector, or the record a FHIR-native HIS sent under its own id), whichever feed came first.
Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from pydicom.uid import generate_uid

from imaging_feeds import adt_file, dicom_file, fhir_patient_file
from rhip.fhir import systems
from rhip.fhir.identifiers import make_citizen_id
from rhip.ingest.pipeline import Pipeline
from rhip.ingest.provenance import stable_id
from rhip.ingest.runner import ingest_file

HIS = "330402S01"  # HL7 v2 HIS and a PACS
FHIR_HIS = "330402T01"  # FHIR-native HIS (keeps its own Patient ids) and a PACS


def _cid(seq: int) -> str:
    return make_citizen_id("330402", date(1980, 1, 1), 2 * seq, "female")  # female: an even sequence


def _hl7_patient(facility: str, key: str) -> str:
    return stable_id("Patient", facility, key)


def _studies(pipeline: Pipeline, patient: str) -> set[str]:
    """Ids ``ImagingStudy?patient=<id>`` finds."""
    return {r["id"] for r in pipeline.store.search("ImagingStudy", [("patient", patient)]).matches}


def _study(pipeline: Pipeline, uid: str) -> dict[str, Any]:
    return pipeline.store.read("ImagingStudy", stable_id("ImagingStudy", uid))


def test_study_reaches_the_his_record_whether_it_came_before_or_after(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    early, late = generate_uid(), generate_uid()
    ingest_file(pipeline, adt_file(tmp_path / "a.hl7", HIS, "M-1", _cid(11), "C-1"), HIS)
    assert ingest_file(pipeline, dicom_file(tmp_path / "1.dcm", early, "M-1", HIS), HIS).stored == 1
    assert ingest_file(pipeline, dicom_file(tmp_path / "2.dcm", late, "M-2", HIS), HIS).stored == 1
    assert pipeline.store.count("Patient") == 1  # the PACS creates no Patient of its own
    ingest_file(pipeline, adt_file(tmp_path / "b.hl7", HIS, "M-2", _cid(12), "C-2"), HIS)
    first, second = _hl7_patient(HIS, "M-1"), _hl7_patient(HIS, "M-2")
    assert _studies(pipeline, first) == {stable_id("ImagingStudy", early)}
    assert _studies(pipeline, second) == {stable_id("ImagingStudy", late)}
    assert _study(pipeline, early)["subject"] == {
        "reference": f"Patient/{first}",
        "type": "Patient",
        "identifier": {"system": systems.facility_card_system(HIS, "mrn"), "value": "M-1"},
    }
    his = pipeline.store.read("Patient", second)
    assert his["name"][0]["family"] == "王" and his["birthDate"] == "1980-01-01"  # the HIS's record


def test_a_citizen_id_finds_this_facilitys_record(pipeline: Pipeline, tmp_path: Path) -> None:
    """Issuer CHN: the record this facility's HIS holds with that citizen ID, not another facility's;
    without one, the id a HIS that knows the person by citizen ID alone gives its Patient."""
    known, unknown = _cid(21), _cid(22)
    ingest_file(
        pipeline,
        fhir_patient_file(tmp_path / "Patient.ndjson", FHIR_HIS, "t01-21", "0000021", known),
        FHIR_HIS,
    )
    ingest_file(pipeline, adt_file(tmp_path / "a.hl7", HIS, "M-21", known, "C-21"), HIS)
    one, two = generate_uid(), generate_uid()
    ingest_file(pipeline, dicom_file(tmp_path / "1.dcm", one, known, "CHN"), HIS)
    ingest_file(pipeline, dicom_file(tmp_path / "2.dcm", two, unknown, "NNCHN"), HIS)
    assert _study(pipeline, one)["subject"]["reference"] == f"Patient/{_hl7_patient(HIS, 'M-21')}"
    subject = _study(pipeline, two)["subject"]
    assert subject["identifier"] == {"system": systems.CITIZEN_ID, "value": unknown}
    ingest_file(pipeline, adt_file(tmp_path / "b.hl7", HIS, "", unknown, "C-22"), HIS)
    assert subject["reference"] == f"Patient/{_hl7_patient(HIS, unknown)}"
    assert _studies(pipeline, _hl7_patient(HIS, unknown)) == {stable_id("ImagingStudy", two)}


def test_a_fhir_native_his_record_is_found_by_its_record_number(pipeline: Pipeline, tmp_path: Path) -> None:
    ingest_file(
        pipeline,
        fhir_patient_file(tmp_path / "Patient.ndjson", FHIR_HIS, "t01-77", "0000077", _cid(31)),
        FHIR_HIS,
    )
    uid = generate_uid()
    ingest_file(pipeline, dicom_file(tmp_path / "1.dcm", uid, "0000077", FHIR_HIS), FHIR_HIS)
    assert _studies(pipeline, "t01-77") == {stable_id("ImagingStudy", uid)}


def test_a_redelivered_file_whose_mapping_changed_updates_the_study(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """A file that came before its FHIR-native HIS record, sent again once the record is in, gets the
    record's id as a new version; sent once more it is a duplicate."""
    uid = generate_uid()
    dcm = dicom_file(tmp_path / "1.dcm", uid, "0000088", FHIR_HIS)
    assert ingest_file(pipeline, dcm, FHIR_HIS).stored == 1
    assert _study(pipeline, uid)["subject"]["reference"] == f"Patient/{_hl7_patient(FHIR_HIS, '0000088')}"
    ingest_file(
        pipeline,
        fhir_patient_file(tmp_path / "Patient.ndjson", FHIR_HIS, "t01-88", "0000088", _cid(41)),
        FHIR_HIS,
    )
    again = ingest_file(pipeline, dcm, FHIR_HIS)
    assert (again.stored, again.duplicates) == (1, 0)
    study = _study(pipeline, uid)
    assert study["subject"]["reference"] == "Patient/t01-88" and study["meta"]["versionId"] == "2"
    assert study["numberOfInstances"] == 1
    once_more = ingest_file(pipeline, dcm, FHIR_HIS)
    assert (once_more.stored, once_more.duplicates) == (0, 1)
    assert _study(pipeline, uid)["meta"]["versionId"] == "2"


def test_a_study_stored_by_identifier_only_gets_its_reference(pipeline: Pipeline, tmp_path: Path) -> None:
    """A study an earlier release stored (subject by identifier only) is given the reference when its
    file is ingested again: the stored study is the base the file merges into, its subject is replaced."""
    ingest_file(pipeline, adt_file(tmp_path / "a.hl7", HIS, "M-5", _cid(51), "C-5"), HIS)
    uid = generate_uid()
    dcm = dicom_file(tmp_path / "1.dcm", uid, "M-5", HIS)
    ingest_file(pipeline, dcm, HIS)
    sid = stable_id("ImagingStudy", uid)
    old = _study(pipeline, uid)
    old["subject"] = {"type": "Patient", "identifier": old["subject"]["identifier"]}  # as stored before
    pipeline.store.update("ImagingStudy", sid, old)
    assert not _studies(pipeline, _hl7_patient(HIS, "M-5"))
    assert ingest_file(pipeline, dcm, HIS).stored == 1
    assert _studies(pipeline, _hl7_patient(HIS, "M-5")) == {sid}
