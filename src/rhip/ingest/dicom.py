"""DICOM headers -> ImagingStudy (series and instances); pixel data is never read or stored.

Files are read with ``stop_before_pixels=True``. One file is one record (keyed by SOP Instance
UID); the ImagingStudy id derives from the Study Instance UID, and each file contributes its series
and instance, merged with what the store already holds for that study so files may arrive in any
order and in separate batches.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

from rhip.errors import ResourceNotFound
from rhip.fhir import systems
from rhip.ingest.canonical import to_instant
from rhip.ingest.model import Mapped, MappingError, Record, issue
from rhip.ingest.pipeline import MapContext, register_mapper
from rhip.ingest.provenance import stable_id

log = logging.getLogger(__name__)
CONNECTOR = "dicom"


#: How much of a file pydicom cannot read is kept for quarantine (its start says what it is).
UNREADABLE_KEPT = 1 << 20


def iter_dicom_files(paths: list[Path]) -> Iterator[Record]:
    """One record per DICOM file: its bytes up to the pixel data, never the pixels themselves.

    Memory stays bounded by the header whatever the image size, and a quarantined file does not
    carry image data into the quarantine table. A file pydicom cannot read keeps its first MiB.
    """
    for path in paths:
        yield Record(_header_bytes(path), path.name)


def _header_bytes(path: Path) -> bytes:
    import pydicom

    with path.open("rb") as fh:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pydicom.dcmread(fh, stop_before_pixels=True)
            end = fh.tell()  # at the pixel data element, or the end of a file without one
        except Exception:  # not readable as DICOM: the mapper names the reason from these bytes
            end = UNREADABLE_KEPT
        fh.seek(0)
        return fh.read(end)


def _read(raw: bytes) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # odd but readable headers are judged by the mapping, not pydicom
            return pydicom.dcmread(BytesIO(raw), stop_before_pixels=True)
    except (InvalidDicomError, EOFError, ValueError, OSError) as exc:
        raise MappingError("not a DICOM file", [issue("dicom-syntax", "", type(exc).__name__)]) from None


def _dt(date: str, tm: str, ctx: MapContext) -> str | None:
    if not date:
        return None
    stamp = date + (tm.split(".")[0] if tm else "")
    try:
        return to_instant(stamp, ctx.tz)
    except ValueError:
        return None


def map_dicom(record: Record, ctx: MapContext) -> Mapped:
    """One DICOM file -> the ImagingStudy of its study (with this file's series and instance)."""
    ds = _read(record.raw)
    study_uid = str(getattr(ds, "StudyInstanceUID", "") or "")
    series_uid = str(getattr(ds, "SeriesInstanceUID", "") or "")
    sop_uid = str(getattr(ds, "SOPInstanceUID", "") or "")
    if not (study_uid and series_uid and sop_uid):
        raise MappingError(
            "UIDs missing", [issue("required", "(0020,000D)", "study/series/SOP instance UID")]
        )
    facility = ctx.source.facility
    patient_id = str(getattr(ds, "PatientID", "") or "")
    if not patient_id:
        raise MappingError("PatientID missing", [issue("required", "(0010,0020)", "no patient id")])
    issuer = str(getattr(ds, "IssuerOfPatientID", "") or "")
    system = (
        systems.CITIZEN_ID
        if issuer.upper() in ("CHN", "NNCHN")
        else systems.facility_card_system(facility, "mrn")
    )
    study_id = stable_id("ImagingStudy", study_uid)
    study = _existing(ctx, study_id) or {
        "resourceType": "ImagingStudy",
        "id": study_id,
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{study_uid}"}],
        "status": "available",
        "subject": {"type": "Patient", "identifier": {"system": system, "value": patient_id}},
        "series": [],
    }
    started = _dt(str(getattr(ds, "StudyDate", "") or ""), str(getattr(ds, "StudyTime", "") or ""), ctx)
    if started:
        study["started"] = started
    if getattr(ds, "StudyDescription", None):
        study["description"] = str(ds.StudyDescription)
    series = next((s for s in study["series"] if s["uid"] == series_uid), None)
    if series is None:
        modality = str(getattr(ds, "Modality", "") or "OT")
        series = {
            "uid": series_uid,
            "modality": {"system": systems.DICOM_MODALITY, "code": modality},
            "instance": [],
        }
        if getattr(ds, "SeriesNumber", None) is not None:
            series["number"] = int(ds.SeriesNumber)
        if getattr(ds, "BodyPartExamined", None):
            series["bodySite"] = {"display": str(ds.BodyPartExamined)}
        study["series"].append(series)
    if not any(i["uid"] == sop_uid for i in series["instance"]):
        inst: dict[str, Any] = {
            "uid": sop_uid,
            "sopClass": {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{ds.SOPClassUID}"},
        }
        if getattr(ds, "InstanceNumber", None) is not None:
            inst["number"] = int(ds.InstanceNumber)
        series["instance"].append(inst)
    study["numberOfSeries"] = len(study["series"])
    study["numberOfInstances"] = sum(len(s["instance"]) for s in study["series"])
    study.pop("meta", None)
    pending = ctx.options.setdefault("pending_studies", {})
    pending[study_id] = study
    return Mapped([study])


def _existing(ctx: MapContext, study_id: str) -> dict[str, Any] | None:
    store = ctx.options.get("store")
    if store is None:
        return None
    pending = ctx.options.setdefault("pending_studies", {})
    if study_id in pending:
        return pending[study_id]
    try:
        return store.read("ImagingStudy", study_id)
    except ResourceNotFound:
        return None
    except Exception:
        log.debug("no readable ImagingStudy %s", study_id)
        return None


register_mapper(CONNECTOR, map_dicom)
