"""DICOM headers -> ImagingStudy (series and instances); pixel data is never read or stored.

Files are read with ``stop_before_pixels=True``. One file is one record (keyed by SOP Instance
UID); the ImagingStudy id derives from the Study Instance UID, and each file contributes its series
and instance, merged with what the store already holds for that study so files may arrive in any
order and in separate batches.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

from rhip.errors import ResourceNotFound
from rhip.fhir import systems
from rhip.fhir.validation import validate_resource
from rhip.ingest.canonical import to_instant
from rhip.ingest.mappers import MapContext, register_mapper
from rhip.ingest.model import Mapped, MappingError, Record, issue
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

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # odd but readable headers are judged by the mapping, not pydicom
            return pydicom.dcmread(BytesIO(raw), stop_before_pixels=True)
    except Exception as exc:  # pydicom fails in many ways on damaged bytes; all mean "not DICOM"
        raise MappingError("not a DICOM file", [issue("dicom-syntax", "", type(exc).__name__)]) from None


def _tag(keyword: str) -> str:
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword) or 0
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _text(ds: Any, keyword: str) -> str:
    """An element's value as text ('' when absent); an unreadable value quarantines the file.

    pydicom converts values when they are first read, so a damaged value (an IS that is not a
    number, bytes its character set cannot decode) fails here, named by its tag.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = getattr(ds, keyword, None)
            return "" if value is None else str(value).strip("\x00 ")
    except Exception:
        raise MappingError(
            f"{keyword} unreadable", [issue("dicom-value", _tag(keyword), f"{keyword} cannot be read")]
        ) from None


def _number(ds: Any, keyword: str) -> int | None:
    """An IS element as an int (None when absent or empty); anything else is a data-type reason."""
    text = _text(ds, keyword)
    if not text:
        return None
    try:
        number = int(text)
    except ValueError:
        raise MappingError(
            f"{keyword} not a number", [issue("data-type", _tag(keyword), f"{keyword} is not an integer")]
        ) from None
    if not 0 <= number <= 2**31 - 1:
        raise MappingError(
            f"{keyword} out of range", [issue("data-type", _tag(keyword), f"{keyword} is out of range")]
        )
    return number


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
    study_uid, series_uid, sop_uid = (
        _text(ds, k) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
    )
    if not (study_uid and series_uid and sop_uid):
        raise MappingError(
            "UIDs missing", [issue("required", "(0020,000D)", "study/series/SOP instance UID")]
        )
    facility = ctx.source.facility
    patient_id = _text(ds, "PatientID")
    if not patient_id:
        raise MappingError("PatientID missing", [issue("required", "(0010,0020)", "no patient id")])
    issuer = _text(ds, "IssuerOfPatientID")
    system = (
        systems.CITIZEN_ID
        if issuer.upper() in ("CHN", "NNCHN")
        else systems.facility_card_system(facility, "mrn")
    )
    study_id = stable_id("ImagingStudy", study_uid)
    existing = _existing(ctx, study_id)
    # a copy: the study of an earlier file of this chunk is that file's resource, not this one's
    study = (
        copy.deepcopy(existing)
        if existing
        else {
            "resourceType": "ImagingStudy",
            "id": study_id,
            "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{study_uid}"}],
            "status": "available",
            "subject": {"type": "Patient", "identifier": {"system": system, "value": patient_id}},
            "series": [],
        }
    )
    started = _dt(_text(ds, "StudyDate"), _text(ds, "StudyTime"), ctx)
    if started:
        study["started"] = started
    description = _text(ds, "StudyDescription")
    if description:
        study["description"] = description
    _add_instance(study, ds, series_uid, sop_uid)
    study.pop("meta", None)
    problems = [i for i in validate_resource(study) if i.severity in ("error", "fatal")]
    if problems:  # checked here so that a bad file does not become the base of the next one
        raise MappingError("ImagingStudy invalid", problems)
    pending = ctx.options.setdefault("pending_studies", {})
    pending[study_id] = study
    return Mapped([study])


def _add_instance(study: dict[str, Any], ds: Any, series_uid: str, sop_uid: str) -> None:
    """This file's series (if new) and instance (if new) in the study."""
    series = next((s for s in study["series"] if s.get("uid") == series_uid), None)
    if series is None:
        series = {
            "uid": series_uid,
            "modality": {"system": systems.DICOM_MODALITY, "code": _text(ds, "Modality") or "OT"},
            "instance": [],
        }
        number = _number(ds, "SeriesNumber")
        if number is not None:
            series["number"] = number
        body_part = _text(ds, "BodyPartExamined")
        if body_part:
            series["bodySite"] = {"display": body_part}
        study["series"].append(series)
    if not any(i.get("uid") == sop_uid for i in series["instance"]):
        sop_class = _text(ds, "SOPClassUID")
        if not sop_class:
            raise MappingError("SOPClassUID missing", [issue("required", "(0008,0016)", "no SOP class UID")])
        inst: dict[str, Any] = {
            "uid": sop_uid,
            "sopClass": {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{sop_class}"},
        }
        number = _number(ds, "InstanceNumber")
        if number is not None:
            inst["number"] = number
        series["instance"].append(inst)
    study["numberOfSeries"] = len(study["series"])
    study["numberOfInstances"] = sum(len(s["instance"]) for s in study["series"])


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
