"""FHIR R4 output of the facilities whose native system speaks FHIR (tertiary and some secondary).

Resources go to ``fhir/<facility>/<ResourceType>.ndjson`` with ids local to the facility; a sample
of encounters is also written as a transaction bundle under ``fhir-bundles/<facility>/``.
"""

from __future__ import annotations

import functools
import random
from datetime import date, datetime
from typing import Any

import orjson

from rhip.fhir import systems
from rhip.synth.model import Encounter, Life, Measure, SourcePatient
from rhip.synth.writers.base import Appends, Buffer, Writer, register_writer

TZ = "+08:00"
_CLASS = {
    "emergency": ("EMER", "emergency"),
    "inpatient": ("IMP", "inpatient encounter"),
    "delivery": ("IMP", "inpatient encounter"),
}
_KIND_ZH = {
    "outpatient": "门诊",
    "emergency": "急诊",
    "inpatient": "住院",
    "followup": "慢病随访",
    "vaccination": "预防接种",
    "antenatal": "产前检查",
    "delivery": "分娩住院",
}
_ID_TYPE = {"MR": "MR", "NNCHN": "NI", "SS": "SS", "HC": "HC", "VC": "PI"}
_INTERP = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
#: DICOM Body Part Examined -> the SNOMED CT coding DICOM gives it (PS3.16 CID 4031, Common Anatomic
#: Regions), so a FHIR study's series.bodySite names the part its DICOM file names.
BODY_SITES: dict[str, tuple[str, str]] = {
    "CHEST": ("51185008", "Chest"),
    "HEAD": ("69536005", "Head"),
    "ABDOMEN": ("818981001", "Abdomen"),
}


@functools.lru_cache(maxsize=8192)  # one encounter's resources repeat the same instants
def ts(value: datetime) -> str:
    """Local time with the +08:00 offset (Asia/Shanghai has no daylight saving)."""
    return value.isoformat() + TZ  # no microseconds are ever generated; isoformat is much faster


def patient_resource(sp: SourcePatient) -> dict[str, Any]:
    """The facility's Patient resource for one source record."""
    r = sp.resident
    family = sp.name[: len(r.surname)]
    ident = []
    for system, value, kind in sp.identifiers:
        entry: dict[str, Any] = {"system": system, "value": value}
        if kind in _ID_TYPE:
            entry["type"] = {"coding": [{"system": systems.IDENTIFIER_TYPE, "code": _ID_TYPE[kind]}]}
        ident.append(entry)
    res: dict[str, Any] = {
        "resourceType": "Patient",
        "id": sp.source_id,
        "identifier": ident,
        "active": sp.merged_into is None,
        "name": [{"use": "official", "text": sp.name, "family": family, "given": [sp.name[len(family) :]]}],
        "gender": sp.sex,
        "birthDate": sp.birth.isoformat(),
        "address": [{"use": "home", "text": sp.address, "country": "CN"}],
        "managingOrganization": {"reference": f"Organization/{sp.facility.code}"},
    }
    if sp.phone:
        res["telecom"] = [{"system": "phone", "value": sp.phone, "use": "mobile"}]
    if r.death is not None:
        res["deceasedDateTime"] = r.death.isoformat()
    return res


def coverage_resource(sp: SourcePatient) -> dict[str, Any] | None:
    """The basic medical insurance of a record that carries a social-security card, else None."""
    ssc = next(
        (value for system, value, _k in sp.identifiers if system == systems.SOCIAL_SECURITY_CARD), None
    )
    if ssc is None:
        return None
    adult = (sp.resident.birth.year + 18, sp.resident.birth.month) <= (2026, 1)
    return {
        "resourceType": "Coverage",
        "id": f"{sp.source_id}-cov",
        "status": "active",
        "type": {"text": "职工基本医疗保险" if adult and sp.resident.index % 3 else "城乡居民基本医疗保险"},
        "subscriberId": ssc,
        "beneficiary": {"reference": f"Patient/{sp.source_id}"},
        "payor": [{"display": "医疗保障局"}],
    }


def observation(m: Measure, oid: str, pid: str, eid: str, when: datetime, category: str) -> dict[str, Any]:
    """An Observation for a lab result or vital sign."""
    res: dict[str, Any] = {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "category": [{"coding": [{"system": systems.OBSERVATION_CATEGORY, "code": category}]}],
        "code": {
            "coding": [{"system": systems.LOINC, "code": m.loinc, "display": m.display}],
            "text": m.name_zh,
        },
        "subject": {"reference": f"Patient/{pid}"},
        "encounter": {"reference": f"Encounter/{eid}"},
        "effectiveDateTime": ts(when),
    }
    if isinstance(m.value, str):
        res["valueString"] = m.value
    else:
        res["valueQuantity"] = {"value": m.value, "unit": m.unit, "system": systems.UCUM, "code": m.unit}
        if m.low and m.high:
            res["referenceRange"] = [
                {
                    "low": {"value": float(m.low), "unit": m.unit, "system": systems.UCUM, "code": m.unit},
                    "high": {"value": float(m.high), "unit": m.unit, "system": systems.UCUM, "code": m.unit},
                }
            ]
    res["interpretation"] = [{"coding": [{"system": _INTERP, "code": m.flag}]}]
    return res


def _refs(enc: Encounter) -> tuple[SourcePatient, Any, str, str, dict[str, str], dict[str, str]]:
    sp = enc.patient
    return (
        sp,
        sp.facility,
        sp.source_id,
        enc.id,
        {"reference": f"Patient/{sp.source_id}"},
        {"reference": f"Encounter/{enc.id}"},
    )


def _conditions(enc: Encounter, out: list[dict[str, Any]]) -> list[dict[str, Any]]:
    _sp, _fac, _pid, eid, subject, eref = _refs(enc)
    conds: list[dict[str, Any]] = []
    for i, (dx, name) in enumerate(enc.diagnoses):
        cid = f"{eid}-c{i}"
        conds.append({"condition": {"reference": f"Condition/{cid}"}, "rank": i + 1})
        out.append(
            {
                "resourceType": "Condition",
                "id": cid,
                "clinicalStatus": {"coding": [{"system": systems.CONDITION_CLINICAL, "code": "active"}]},
                "verificationStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                            "code": "confirmed",
                        }
                    ]
                },
                "category": [
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                "code": "encounter-diagnosis",
                            }
                        ]
                    }
                ],
                "code": {"coding": [{"system": systems.ICD10_CN, "code": dx, "display": name}], "text": name},
                "subject": subject,
                "encounter": eref,
                "recordedDate": ts(enc.start),
            }
        )
    return conds


def _encounter(enc: Encounter, conds: list[dict[str, Any]]) -> dict[str, Any]:
    _sp, fac, _pid, eid, subject, _eref = _refs(enc)
    code, display = _CLASS.get(enc.kind, ("AMB", "ambulatory"))
    resource: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": eid,
        "status": "finished",
        "class": {"system": systems.ENCOUNTER_CLASS, "code": code, "display": display},
        "type": [{"text": _KIND_ZH[enc.kind]}],
        "serviceType": {"text": enc.department},
        "subject": subject,
        "participant": [{"individual": {"reference": f"Practitioner/{enc.practitioner.id}"}}],
        "period": {"start": ts(enc.start), "end": ts(enc.end)},
        "serviceProvider": {"reference": f"Organization/{fac.code}"},
    }
    if conds:
        resource["diagnosis"] = conds
    if code == "IMP":
        disp = ("exp", "Expired") if enc.outcome == "died" else ("home", "Home")
        resource["hospitalization"] = {
            "dischargeDisposition": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/discharge-disposition",
                        "code": disp[0],
                        "display": disp[1],
                    }
                ]
            }
        }
    return resource


def _observations(enc: Encounter, out: list[dict[str, Any]]) -> None:
    _sp, _fac, pid, eid, subject, eref = _refs(enc)
    for i, m in enumerate(enc.vitals):
        out.append(observation(m, f"{eid}-v{i}", pid, eid, enc.start, "vital-signs"))
    for i, m in enumerate(enc.labs):
        out.append(observation(m, f"{eid}-l{i}", pid, eid, enc.start, "laboratory"))
    for i, (pc, name) in enumerate(enc.procedures):
        out.append(
            {
                "resourceType": "Procedure",
                "id": f"{eid}-p{i}",
                "status": "completed",
                "code": {
                    "coding": [{"system": systems.ICD9CM3_CN, "code": pc, "display": name}],
                    "text": name,
                },
                "subject": subject,
                "encounter": eref,
                "performedDateTime": ts(enc.start),
            }
        )


def _medications(enc: Encounter, out: list[dict[str, Any]]) -> None:
    _sp, fac, _pid, eid, subject, eref = _refs(enc)
    drug_system = systems.local_code_system(fac.code, "drug")
    for i, med in enumerate(enc.meds):
        concept = {
            "coding": [
                {"system": drug_system, "code": med.code, "display": med.name},
                {"system": systems.ATC, "code": med.atc},
            ],
            "text": f"{med.name} {med.strength}",
        }
        rid = f"{eid}-m{i}"
        qty = med.dose * med.days
        out.append(
            {
                "resourceType": "MedicationRequest",
                "id": rid,
                "status": "completed",
                "intent": "order",
                "medicationCodeableConcept": concept,
                "subject": subject,
                "encounter": eref,
                "authoredOn": ts(enc.start),
                "requester": {"reference": f"Practitioner/{enc.practitioner.id}"},
                "dosageInstruction": [
                    {"text": f"{med.route} 每日{med.dose:g}{med.unit}", "route": {"text": med.route}}
                ],
                "dispenseRequest": {
                    "quantity": {"value": qty, "unit": med.unit},
                    "expectedSupplyDuration": {
                        "value": med.days,
                        "unit": "d",
                        "system": systems.UCUM,
                        "code": "d",
                    },
                },
            }
        )
        out.append(
            {
                "resourceType": "MedicationDispense",
                "id": f"{eid}-d{i}",
                "status": "completed",
                "medicationCodeableConcept": concept,
                "subject": subject,
                "context": eref,
                "authorizingPrescription": [{"reference": f"MedicationRequest/{rid}"}],
                "quantity": {"value": qty, "unit": med.unit},
                "whenHandedOver": ts(enc.start),
            }
        )


def _body_site(part: str) -> dict[str, str]:
    """series.bodySite of a DICOM Body Part Examined: its SNOMED CT coding (the part as text if unknown)."""
    if part not in BODY_SITES:
        return {"display": part}
    code, display = BODY_SITES[part]
    return {"system": systems.SNOMED, "code": code, "display": display}


def _imaging_and_vaccine(enc: Encounter, out: list[dict[str, Any]]) -> None:
    _sp, fac, _pid, eid, subject, eref = _refs(enc)
    if enc.imaging is not None:
        im = enc.imaging
        modality = {"system": systems.DICOM_MODALITY, "code": im.modality}
        out.append(
            {
                "resourceType": "ImagingStudy",
                "id": f"{eid}-i",
                "status": "available",
                "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{im.uid}"}],
                "modality": [modality],
                "subject": subject,
                "encounter": eref,
                "started": ts(enc.start),
                "numberOfSeries": 1,
                "numberOfInstances": 1,
                "procedureCode": [
                    {"coding": [{"system": systems.ICD9CM3_CN, "code": im.code, "display": im.name}]}
                ],
                "series": [
                    {
                        "uid": im.series_uid,
                        "number": 1,
                        "modality": modality,
                        "bodySite": _body_site(im.body_part),
                        "numberOfInstances": 1,
                        "instance": [
                            {
                                "uid": im.instance_uid,
                                "number": 1,
                                "sopClass": {
                                    "system": "urn:ietf:rfc:3986",
                                    "code": "urn:oid:1.2.840.10008.5.1.4.1.1.7",
                                },
                            }
                        ],
                    }
                ],
            }
        )
    if enc.vaccine is not None:
        v = enc.vaccine
        out.append(
            {
                "resourceType": "Immunization",
                "id": f"{eid}-z",
                "status": "completed",
                "vaccineCode": {
                    "coding": [
                        {
                            "system": systems.local_code_system(fac.code, "vaccine"),
                            "code": v["abbr"],
                            "display": v["vaccine_zh"],
                        }
                    ],
                    "text": v["vaccine_zh"],
                },
                "patient": subject,
                "encounter": eref,
                "occurrenceDateTime": ts(enc.start),
                "primarySource": True,
                "route": {"text": v["route"]},
                "protocolApplied": [{"doseNumberPositiveInt": int(v["dose_no"])}],
            }
        )


def encounter_resources(enc: Encounter) -> list[dict[str, Any]]:
    """Encounter and everything recorded during it, in dependency order."""
    out: list[dict[str, Any]] = []
    conds = _conditions(enc, out)
    out.insert(0, _encounter(enc, conds))
    _observations(enc, out)
    _medications(enc, out)
    _imaging_and_vaccine(enc, out)
    return out


def _bundle(sp: SourcePatient, resources: list[dict[str, Any]], bid: str) -> dict[str, Any]:
    entries = [
        {"resource": patient_resource(sp), "request": {"method": "PUT", "url": f"Patient/{sp.source_id}"}}
    ]
    entries += [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        for r in resources
    ]
    return {"resourceType": "Bundle", "id": bid, "type": "transaction", "entry": entries}


@register_writer("fhir")
class FhirWriter(Writer):
    """NDJSON per facility and resource type, plus sampled transaction bundles."""

    def render(self, lives: list[Life], chunk: int) -> Appends:
        buf = Buffer()
        share = float(self.ctx["params"]["facilities"]["fhir_bundle_share"])
        for life in lives:
            for sp in life.sources:
                if sp.facility.native == "fhir":
                    buf.put(
                        f"fhir/{sp.facility.code}/Patient.ndjson", orjson.dumps(patient_resource(sp)) + b"\n"
                    )
                    coverage = coverage_resource(sp)
                    if coverage is not None:
                        buf.put(f"fhir/{sp.facility.code}/Coverage.ndjson", orjson.dumps(coverage) + b"\n")
            for enc in life.encounters:
                fac = enc.patient.facility
                if fac.native != "fhir":
                    continue
                resources = encounter_resources(enc)
                for res in resources:
                    buf.put(f"fhir/{fac.code}/{res['resourceType']}.ndjson", orjson.dumps(res) + b"\n")
                if fac.tier == "tertiary" and random.Random(enc.id).random() < share:
                    path = self.out / "fhir-bundles" / fac.code / f"{enc.id}.json"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(
                        orjson.dumps(
                            _bundle(enc.patient, resources, f"tx-{enc.id}"), option=orjson.OPT_INDENT_2
                        )
                    )
        return buf.result()


def region_resources(region: Any) -> dict[str, list[dict[str, Any]]]:
    """Organization, Location, Practitioner, PractitionerRole and Schedule resources of the region."""
    out: dict[str, list[dict[str, Any]]] = {
        k: [] for k in ("Organization", "Location", "Practitioner", "PractitionerRole", "Schedule")
    }
    out["Organization"].append(
        {
            "resourceType": "Organization",
            "id": region.city_code,
            "active": True,
            "name": f"{region.city_name}卫生健康委员会",
            "type": [{"text": "卫生健康行政部门"}],
            "address": [{"text": region.province + region.city_name, "country": "CN"}],
        }
    )
    for fac in region.facilities:
        _facility_resources(fac, region, out)
    return out


def _facility_resources(fac: Any, region: Any, out: dict[str, list[dict[str, Any]]]) -> None:
    """Organization, Locations, Practitioners, roles and schedules of one facility."""
    out["Organization"].append(
        {
            "resourceType": "Organization",
            "id": fac.code,
            "active": True,
            "identifier": [{"system": systems.ORGANIZATION_CODE, "value": fac.code}],
            "type": [
                {
                    "text": {
                        "tertiary": "三级医院",
                        "secondary": "二级医院",
                        "primary": "基层医疗卫生机构",
                        "cdc": "疾病预防控制中心",
                    }[fac.tier]
                }
            ],
            "name": fac.name,
            "partOf": {"reference": f"Organization/{region.city_code}"},
            "address": [
                {
                    "text": region.province + region.city_name + region.district_names[fac.district],
                    "district": region.district_names[fac.district],
                    "city": region.city_name,
                    "state": region.province,
                    "country": "CN",
                }
            ],
        }
    )
    for dept in fac.departments:
        out["Location"].append(
            {
                "resourceType": "Location",
                "id": f"{fac.code}-{abs(hash_text(dept)) % 10**6:06d}",
                "status": "active",
                "name": f"{fac.name}{dept}",
                "mode": "instance",
                "managingOrganization": {"reference": f"Organization/{fac.code}"},
            }
        )
    for p in fac.practitioners:
        out["Practitioner"].append(
            {
                "resourceType": "Practitioner",
                "id": p.id,
                "active": True,
                "identifier": [{"system": systems.PRACTITIONER_LICENSE, "value": p.licence}],
                "name": [{"text": p.name}],
                "gender": p.sex,
            }
        )
        out["PractitionerRole"].append(
            {
                "resourceType": "PractitionerRole",
                "id": f"{p.id}-role",
                "active": True,
                "practitioner": {"reference": f"Practitioner/{p.id}"},
                "organization": {"reference": f"Organization/{fac.code}"},
                "code": [{"text": "医师" if p.role == "doctor" else "护士"}],
                "specialty": [{"text": p.department}],
            }
        )
        if p.role == "doctor":
            out["Schedule"].append(
                {
                    "resourceType": "Schedule",
                    "id": f"{p.id}-schedule",
                    "active": True,
                    "serviceType": [{"text": p.department}],
                    "actor": [{"reference": f"PractitionerRole/{p.id}-role"}],
                    "comment": "周一至周五 08:00-12:00, 14:00-17:30",
                }
            )


def hash_text(text: str) -> int:
    """A stable (process-independent) integer hash of ``text``."""
    h = 0
    for ch in text.encode("utf-8"):
        h = (h * 131 + ch) % (1 << 61)
    return h


def iso(d: date) -> str:
    """ISO date text."""
    return d.isoformat()
