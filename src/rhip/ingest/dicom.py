"""DICOM headers -> ImagingStudy (series and instances); pixel data is never read or stored.

Files are read with ``stop_before_pixels=True``. One file is one record (keyed by SOP Instance
UID); the ImagingStudy id derives from the Study Instance UID, and each file contributes its series
and instance, merged with what the store already holds for that study so files may arrive in any
order and in separate batches.

The study's subject is the facility's own Patient record of the person the file names (Patient ID
and Issuer of Patient ID), referenced by id with the identifier kept beside it; see
:func:`patient_reference` for how the id is found. Files are loaded untracked (the runner passes
``track=False``): a re-delivered file is mapped again and is a duplicate only when the study it
gives is unchanged, so a file whose mapping changed (a subject that now resolves) updates it.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

from rhip.errors import ResourceNotFound, RhipError
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
    patient_id = _text(ds, "PatientID")
    if not patient_id:
        raise MappingError("PatientID missing", [issue("required", "(0010,0020)", "no patient id")])
    subject = patient_reference(ctx, patient_id, _text(ds, "IssuerOfPatientID"))
    study_id = stable_id("ImagingStudy", study_uid)
    existing = _existing(ctx, study_id)
    # a copy: the study of an earlier file of this chunk is that file's resource, not this one's
    study: dict[str, Any] = (
        copy.deepcopy(existing)
        if existing
        else {
            "resourceType": "ImagingStudy",
            "id": study_id,
            "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{study_uid}"}],
            "status": "available",
            "series": [],
        }
    )
    study["subject"] = subject  # every file says whose study it is; a study stored before gets the reference
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


#: Issuers of Patient ID that mean the PatientID is the resident's citizen ID (居民身份证号).
CITIZEN_ISSUERS = frozenset({"CHN", "NNCHN"})


def patient_reference(ctx: MapContext, patient_id: str, issuer: str) -> dict[str, Any]:
    """The study's subject: ``Patient/<id>`` of the facility's record of this person, plus the identifier.

    The id is the one the facility's HIS feed gives its Patient: ``stable_id("Patient", facility,
    key)``, the formula of the HL7 v2 connector (:func:`rhip.ingest.hl7v2_map._patient`), whose key
    is the facility's record number (MRN), or the citizen ID for a patient the HIS knows by that
    alone. A PatientID with issuer ``CHN``/``NNCHN`` is a citizen ID (identifier system
    ``CITIZEN_ID``); any other issuer, or none, makes it the facility's MRN. When the store holds no
    Patient of that id, the facility's record is looked up by the identifier (an MRN: any Patient
    carrying it; a citizen ID: a Patient carrying it and a record number of this facility), which
    finds the record of a HIS that names its patients otherwise (FHIR feeds keep their own ids, CSV
    mappings derive theirs in their own way). Without a store, or when nothing (or more than one
    record) is found, the reference is the deterministic id: it resolves once the HIS record
    arrives over HL7 v2, and no Patient is created here (a thin one would overwrite the HIS's).
    Answers are kept for the run (``ctx.options["dicom_patients"]``): a study has many files.
    """
    facility = ctx.source.facility
    citizen = issuer.strip().upper() in CITIZEN_ISSUERS
    system = systems.CITIZEN_ID if citizen else systems.facility_card_system(facility, "mrn")
    cache: dict[tuple[str, str, str], str] = ctx.options.setdefault("dicom_patients", {})
    key = (facility, system, patient_id)
    rid = cache.get(key)
    if rid is None:
        rid = stable_id("Patient", facility, patient_id)
        store = ctx.options.get("store")
        if store is not None and not _patient_exists(store, rid):
            rid = _patient_by_identifier(store, facility, system, patient_id) or rid
        cache[key] = rid
    return {
        "reference": f"Patient/{rid}",
        "type": "Patient",
        "identifier": {"system": system, "value": patient_id},
    }


def _patient_exists(store: Any, rid: str) -> bool:
    try:
        store.read("Patient", rid)
    except RhipError:  # not found, deleted (gone): not the record to point to
        return False
    return True


def _patient_by_identifier(store: Any, facility: str, system: str, value: str) -> str | None:
    """The one Patient of this facility that carries ``system|value`` (None if none or several)."""
    try:
        found = store.search("Patient", [("identifier", f"{system}|{value}")], count=20).matches
    except RhipError as exc:
        log.debug("no Patient look-up for %s: %s", system, exc)
        return None
    if system == systems.CITIZEN_ID:  # a citizen ID is held by the resident's records everywhere
        mrn = systems.facility_card_system(facility, "mrn")
        found = [p for p in found if any(i.get("system") == mrn for i in p.get("identifier") or [])]
    ids = {str(p["id"]) for p in found if p.get("id")}
    return ids.pop() if len(ids) == 1 else None


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
