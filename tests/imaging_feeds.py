"""One facility's feeds about one person, as files the real connectors read: a PACS's DICOM file,
a HIS's HL7 v2 ADT message and a FHIR-native HIS's Patient line.

Shared by the ingest and security tests of DICOM studies reaching their resident (``tests/`` is on
``sys.path``, see rhip_testkit).
"""

from __future__ import annotations

from pathlib import Path

import orjson
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from rhip.fhir import systems


def dicom_file(
    path: Path,
    study: str,
    patient_id: str,
    issuer: str,
    *,
    body_part: str | None = "CHEST",
    modality: str = "CT",
    series: str | None = None,
    number: int = 1,
    description: str | None = None,
) -> Path:
    """A Part-10 file of instance ``number`` of ``study`` (and ``series``, a new one if None) naming
    the patient by ``patient_id`` and ``issuer``; no Body Part Examined when ``body_part`` is None."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series or generate_uid()
    ds.PatientID = patient_id
    ds.IssuerOfPatientID = issuer
    ds.PatientName = "Wang^Fang"
    ds.Modality = modality
    if body_part is not None:
        ds.BodyPartExamined = body_part
    if description is not None:
        ds.StudyDescription = description
    ds.StudyDate = "20260301"
    ds.StudyTime = "101500"
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(16)
    ds.save_as(path, enforce_file_format=True)
    return path


def adt_file(path: Path, facility: str, mrn: str, citizen_id: str, control: str) -> Path:
    """An HL7 v2 ADT^A28 of ``facility``'s HIS: PID-3 carries the record number (none if ``mrn`` is
    empty: a HIS that knows the patient by citizen ID alone) and the citizen ID."""
    ids = ([f"{mrn}^^^{facility}^MR"] if mrn else []) + [f"{citizen_id}^^^NNCHN^NNCHN"]
    message = (
        f"MSH|^~\\&|HIS|{facility}|RHIP|RHIP|20260301090000+0800||ADT^A28^ADT_A05|{control}|P|2.5\r"
        f"PID|1||{'~'.join(ids)}||王^芳||19800101|F\r"
    )
    path.write_bytes(message.encode())
    return path


def fhir_patient_file(path: Path, facility: str, rid: str, mrn: str, citizen_id: str) -> Path:
    """A FHIR-native HIS's ``Patient.ndjson``: the Patient keeps the HIS's own id ``rid``."""
    patient = {
        "resourceType": "Patient",
        "id": rid,
        "identifier": [
            {"system": systems.facility_card_system(facility, "mrn"), "value": mrn},
            {"system": systems.CITIZEN_ID, "value": citizen_id},
        ],
        "name": [{"use": "official", "text": "王芳", "family": "王", "given": ["芳"]}],
        "gender": "female",
        "birthDate": "1980-01-01",
    }
    path.write_bytes(orjson.dumps(patient) + b"\n")
    return path
