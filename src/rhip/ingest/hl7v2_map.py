"""HL7 v2 messages -> FHIR R4 resources (ADT, ORU^R01, RDE^O11, RDS^O13, VXU^V04).

Ids are derived from the sending facility and the message's own numbers (patient identifier,
visit number, order and filler numbers), so the same event re-sent, or updated by a later message,
lands on the same resource as a new version. ADT^A40 hands the merge to the identity layer. Other
message types and ADT events are refused with a named reason (the ACK says AR).
"""

from __future__ import annotations

from typing import Any

from rhip.fhir import systems
from rhip.fhir.primitives import is_ascii_digits
from rhip.ingest.canonical import epoch, finite_number, sex_codes, to_instant
from rhip.ingest.hl7v2 import CONNECTOR, Parsed, decode, field_reps, get, normalise, parse
from rhip.ingest.mappers import MapContext, register_mapper
from rhip.ingest.model import Mapped, MappingError, Record, issue
from rhip.ingest.provenance import stable_id

_ADT_PERSON_ENCOUNTER = {"A01", "A02", "A03", "A04", "A05", "A06", "A07", "A08", "A13"}
_ADT_PERSON_ONLY = {"A28", "A31"}
_CITIZEN_TYPES = {"NNCHN", "ID", "CZ", "NI", "PPN_CN", "SFZ"}
_TYPE_SYSTEMS = {"HC": systems.HEALTH_CARD, "SS": systems.SOCIAL_SECURITY_CARD}
_CLASS = {
    "I": ("IMP", "inpatient encounter"),
    "O": ("AMB", "ambulatory"),
    "E": ("EMER", "emergency"),
    "P": ("PRENC", "pre-admission"),
    "R": ("AMB", "ambulatory"),
}
_CODE_SYSTEMS = {
    "LN": systems.LOINC,
    "LOINC": systems.LOINC,
    "I10": systems.ICD10,
    "ICD10-CN": systems.ICD10_CN,
    "ICD10CN": systems.ICD10_CN,
    "ICD9CM3-CN": systems.ICD9CM3_CN,
    "ICD10": systems.ICD10,
    "CVX": "http://hl7.org/fhir/sid/cvx",
    "SCT": systems.SNOMED,
    "ATC": systems.ATC,
    "UCUM": systems.UCUM,
    "NDC": "http://hl7.org/fhir/sid/ndc",
}
_OBS_STATUS = {
    "F": "final",
    "P": "preliminary",
    "C": "corrected",
    "X": "cancelled",
    "R": "preliminary",
    "I": "registered",
    "D": "entered-in-error",
}


def _ts(value: str, ctx: MapContext, path: str) -> str | None:
    if not value:
        return None
    try:
        return to_instant(value, ctx.tz)
    except ValueError:
        raise MappingError(
            "bad timestamp", [issue("datetime-format", path, "not an HL7 TS/DTM value")]
        ) from None


def _coding(comps: list[str], facility: str, domain: str) -> list[dict[str, str]]:
    """CE/CWE components -> codings (primary and alternate); local systems go under the facility."""
    out: list[dict[str, str]] = []
    for offset in (0, 3):
        code = comps[offset].strip() if len(comps) > offset else ""
        if not code:
            continue
        text = comps[offset + 1].strip() if len(comps) > offset + 1 else ""
        sys_name = comps[offset + 2].strip() if len(comps) > offset + 2 else ""
        system = _CODE_SYSTEMS.get(sys_name.upper()) or systems.local_code_system(facility, domain)
        coding = {"system": system, "code": code}
        if text:
            coding["display"] = text
        out.append(coding)
    return out


def _concept(segment: Any, field: int, facility: str, domain: str) -> dict[str, Any] | None:
    reps = field_reps(segment, field)
    if not reps:
        return None
    codings = [c for rep in reps for c in _coding(rep, facility, domain)]
    if not codings:
        return None
    concept: dict[str, Any] = {"coding": codings}
    if codings[0].get("display"):
        concept["text"] = codings[0]["display"]
    return concept


def _pid_identifiers(pid: Any, facility: str) -> tuple[list[dict[str, Any]], str]:
    """PID-3 (and PID-2) -> identifiers by type, plus the facility's own number (the id key)."""
    identifiers: list[dict[str, Any]] = []
    local_id = ""
    for comps in field_reps(pid, 3) + field_reps(pid, 2):
        value = comps[0].strip()
        if not value:
            continue
        id_type = comps[4].strip().upper() if len(comps) > 4 else ""
        authority = comps[3].split("&")[0].strip().upper() if len(comps) > 3 else ""
        if id_type in _CITIZEN_TYPES or authority in ("CHN", "NNCHN"):
            system = systems.CITIZEN_ID
        elif id_type in _TYPE_SYSTEMS:
            system = _TYPE_SYSTEMS[id_type]
        else:
            system = systems.facility_card_system(facility, "mrn")
            local_id = local_id or value
        ident: dict[str, Any] = {"system": system, "value": value}
        if id_type:
            ident["type"] = {"coding": [{"system": systems.IDENTIFIER_TYPE, "code": id_type}]}
        identifiers.append(ident)
    if not identifiers:
        raise MappingError("no patient identifier", [issue("required", "PID-3", "PID-3 has no identifier")])
    return identifiers, local_id or identifiers[0]["value"]


def _pid_names(pid: Any) -> list[dict[str, Any]]:
    names = []
    for comps in field_reps(pid, 5):
        family = comps[0].split("&")[0].strip()
        given = [c.strip() for c in comps[1:3] if c.strip()]
        if not family and not given:
            continue
        name: dict[str, Any] = {"use": "official"}
        if family:
            name["family"] = family
        if given:
            name["given"] = given
        if any("\u4e00" <= ch <= "\u9fff" for ch in family + "".join(given)):
            name["text"] = family + "".join(given)  # Chinese names are written without a space
        names.append(name)
    return names


def _pid_addresses(pid: Any) -> list[dict[str, Any]]:
    addresses = []
    for comps in field_reps(pid, 11):
        parts = [c.split("&")[0].strip() for c in comps] + [""] * 6
        pairs = (("city", parts[2]), ("state", parts[3]), ("postalCode", parts[4]), ("country", parts[5]))
        addr: dict[str, Any] = {k: v for k, v in pairs if v}
        lines = [x for x in parts[:2] if x]
        if lines:
            addr["line"] = lines
        if addr:
            addresses.append(addr)
    return addresses


def _patient(p: Parsed, ctx: MapContext, facility: str) -> dict[str, Any]:
    pids = p.segments("PID")
    if not pids:
        raise MappingError("PID segment missing", [issue("required", "PID", "message has no PID segment")])
    pid = pids[0]
    identifiers, key = _pid_identifiers(pid, facility)
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": stable_id("Patient", facility, key),
        "identifier": identifiers,
    }
    names = _pid_names(pid)
    if names:
        patient["name"] = names
    birth = get(pid, 7)
    if birth:
        if not is_ascii_digits(birth[:8]) or len(birth) < 8:
            raise MappingError("bad birth date", [issue("datetime-format", "PID-7", "not an HL7 date")])
        patient["birthDate"] = f"{birth[:4]}-{birth[4:6]}-{birth[6:8]}"
    sex = get(pid, 8)
    if sex:
        codes = sex_codes(sex)
        patient["gender"] = codes[0] if codes else sex
    addresses = _pid_addresses(pid)
    if addresses:
        patient["address"] = addresses
    phones = [c[0].strip() or (c[11].strip() if len(c) > 11 else "") for c in field_reps(pid, 13)]
    if any(phones):
        patient["telecom"] = [{"system": "phone", "value": v} for v in phones if v]
    death = get(pid, 29)
    if death:
        patient["deceasedDateTime"] = _ts(death, ctx, "PID-29")
    elif get(pid, 30).upper() == "Y":
        patient["deceasedBoolean"] = True
    return patient


def _encounter(p: Parsed, ctx: MapContext, facility: str, patient: dict[str, Any]) -> dict[str, Any] | None:
    pv1s = p.segments("PV1")
    if not pv1s:
        return None
    pv1 = pv1s[0]
    visit = get(pv1, 19) or get(p.segments("PID")[0], 18)
    if not visit:
        return None
    klass = _CLASS.get(get(pv1, 2).upper(), ("AMB", "ambulatory"))
    enc: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": stable_id("Encounter", facility, visit),
        "identifier": [{"system": systems.facility_card_system(facility, "visit"), "value": visit}],
        "status": "in-progress",
        "class": {"system": systems.ENCOUNTER_CLASS, "code": klass[0], "display": klass[1]},
        "subject": {"reference": f"Patient/{patient['id']}"},
        "serviceProvider": {"identifier": {"system": systems.ORGANIZATION_CODE, "value": facility}},
    }
    start = _ts(get(pv1, 44), ctx, "PV1-44")
    end = _ts(get(pv1, 45), ctx, "PV1-45")
    if start or end:
        enc["period"] = {k: v for k, v in (("start", start), ("end", end)) if v}
    if end or p.event == "A03":
        enc["status"] = "finished"
    disposition = get(pv1, 36)
    if disposition:
        enc["hospitalization"] = {
            "dischargeDisposition": {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0112", "code": disposition}]
            }
        }
    ward = get(pv1, 3)
    if ward:
        enc["location"] = [{"location": {"display": ward}}]
    doctor = field_reps(pv1, 7)
    if doctor and doctor[0][0].strip():
        enc["participant"] = [
            {
                "individual": {
                    "identifier": {"system": systems.PRACTITIONER_LICENSE, "value": doctor[0][0].strip()}
                }
            }
        ]
    dept = get(pv1, 10)
    if dept:
        enc["serviceType"] = {
            "coding": [{"system": systems.local_code_system(facility, "department"), "code": dept}]
        }
    return enc


def _conditions(
    p: Parsed, ctx: MapContext, facility: str, patient: dict[str, Any], enc: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """DG1 diagnoses -> Conditions (encounter diagnoses), ids from the visit and the code."""
    out = []
    for n, dg1 in enumerate(p.segments("DG1"), 1):
        code = _concept(dg1, 3, facility, "diagnosis")
        if code is None:
            continue
        visit = enc["id"] if enc else p.control_id
        cond: dict[str, Any] = {
            "resourceType": "Condition",
            "id": stable_id("Condition", facility, visit, code["coding"][0]["code"]),
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
            "code": code,
            "subject": {"reference": f"Patient/{patient['id']}"},
        }
        if enc is not None:
            cond["encounter"] = {"reference": f"Encounter/{enc['id']}"}
        onset = _ts(get(dg1, 5), ctx, f"DG1[{n}]-5")
        if onset:
            cond["onsetDateTime"] = onset
            cond["recordedDate"] = onset
        out.append(cond)
    return out


def _observation(
    obx: Any, p: Parsed, ctx: MapContext, facility: str, subject: str, base: str, n: int
) -> dict[str, Any]:
    code = _concept(obx, 3, facility, "lab")
    if code is None:
        raise MappingError(
            "OBX-3 missing", [issue("required", f"OBX[{n}]-3", "observation identifier missing")]
        )
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": stable_id("Observation", facility, base, get(obx, 1) or str(n), code["coding"][0]["code"]),
        "status": _OBS_STATUS.get(get(obx, 11).upper(), "final"),
        "category": [{"coding": [{"system": systems.OBSERVATION_CATEGORY, "code": "laboratory"}]}],
        "code": code,
        "subject": {"reference": subject},
    }
    vtype = get(obx, 2).upper()
    raw = get(obx, 5)
    if raw:
        if vtype in ("NM", "SN"):
            number = raw.replace("^", "").lstrip("=")
            try:
                value = finite_number(number)
            except ValueError:
                raise MappingError(
                    "numeric value expected",
                    [issue("data-type", f"OBX[{n}]-5", "OBX-2 says NM but OBX-5 is not a number")],
                ) from None
            qty: dict[str, Any] = {"value": int(value) if value.is_integer() and "." not in number else value}
            unit = get(obx, 6)
            if unit:
                qty["unit"] = unit
            obs["valueQuantity"] = qty
        elif vtype in ("CE", "CWE", "CNE"):
            concept = _concept(obx, 5, facility, "lab-result")
            if concept:
                obs["valueCodeableConcept"] = concept
        else:
            obs["valueString"] = raw
    when = _ts(get(obx, 14), ctx, f"OBX[{n}]-14")
    if when:
        obs["effectiveDateTime"] = when
    ref_range = get(obx, 7)
    if ref_range:
        obs["referenceRange"] = [{"text": ref_range}]
    flag = get(obx, 8)
    if flag:
        obs["interpretation"] = [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                        "code": flag.upper(),
                    }
                ]
            }
        ]
    return obs


def _oru(p: Parsed, ctx: MapContext, facility: str, patient: dict[str, Any]) -> list[dict[str, Any]]:
    subject = f"Patient/{patient['id']}"
    out: list[dict[str, Any]] = []
    report: dict[str, Any] | None = None
    n = 0
    for seg in p.message:
        name = str(seg[0])
        if name == "OBR":
            filler = get(seg, 3) or get(seg, 2) or f"{p.control_id}-{get(seg, 1) or len(out)}"
            report = {
                "resourceType": "DiagnosticReport",
                "id": stable_id("DiagnosticReport", facility, filler),
                "identifier": [
                    {"system": systems.facility_card_system(facility, "lab-report"), "value": filler}
                ],
                "status": "final",
                "subject": subject and {"reference": subject},
                "category": [
                    {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}]}
                ],
                "code": _concept(seg, 4, facility, "lab-panel") or {"text": "laboratory report"},
                "result": [],
            }
            eff = _ts(get(seg, 7), ctx, "OBR-7")
            if eff:
                report["effectiveDateTime"] = eff
            issued = _ts(get(seg, 22), ctx, "OBR-22")
            if issued:
                report["issued"] = issued
            out.append(report)
        elif name == "OBX":
            n += 1
            base = report["id"] if report else p.control_id
            obs = _observation(seg, p, ctx, facility, subject, base, n)
            if report is not None:
                obs.setdefault("effectiveDateTime", report.get("effectiveDateTime"))
                if obs["effectiveDateTime"] is None:
                    del obs["effectiveDateTime"]
                report["result"].append({"reference": f"Observation/{obs['id']}"})
            out.append(obs)
    if n == 0:
        raise MappingError("no OBX segment", [issue("required", "OBX", "ORU^R01 without results")])
    for res in out:
        if res["resourceType"] == "DiagnosticReport" and not res["result"]:
            del res["result"]
    return out


def _medication(p: Parsed, ctx: MapContext, facility: str, patient: dict[str, Any]) -> list[dict[str, Any]]:
    subject = {"reference": f"Patient/{patient['id']}"}
    out: list[dict[str, Any]] = []
    orc: Any = None
    for seg in p.message:
        name = str(seg[0])
        if name == "ORC":
            orc = seg
        elif name in ("RXE", "RXD", "RXO"):
            code_field = 2 if name != "RXO" else 1
            med = _concept(seg, code_field, facility, "drug")
            if med is None:
                raise MappingError(
                    "drug code missing", [issue("required", f"{name}-{code_field}", "no give/dispense code")]
                )
            order = (get(orc, 2) if orc is not None else "") or f"{p.control_id}-{len(out)}"
            if name == "RXD":
                res: dict[str, Any] = {
                    "resourceType": "MedicationDispense",
                    "id": stable_id("MedicationDispense", facility, order, get(seg, 1) or "1"),
                    "status": "completed",
                    "medicationCodeableConcept": med,
                    "subject": subject,
                }
                when = _ts(get(seg, 3), ctx, "RXD-3")
                if when:
                    res["whenHandedOver"] = when
                amount = get(seg, 4)
                if amount:
                    res["quantity"] = _qty(amount, get(seg, 5), "RXD-4")
            else:
                res = {
                    "resourceType": "MedicationRequest",
                    "id": stable_id("MedicationRequest", facility, order),
                    "identifier": [
                        {"system": systems.facility_card_system(facility, "order"), "value": order}
                    ],
                    "status": "active",
                    "intent": "order",
                    "medicationCodeableConcept": med,
                    "subject": subject,
                }
                when = _ts(get(orc, 9) if orc is not None else "", ctx, "ORC-9")
                if when:
                    res["authoredOn"] = when
                amount = get(seg, 3)
                if amount:
                    res["dosageInstruction"] = [
                        {"doseAndRate": [{"doseQuantity": _qty(amount, get(seg, 5), "RXE-3")}]}
                    ]
            out.append(res)
    if not out:
        raise MappingError("no RXE/RXD segment", [issue("required", "RXE", "pharmacy message without order")])
    return out


def _qty(value: str, unit: str, path: str) -> dict[str, Any]:
    try:
        number = finite_number(value)
    except ValueError:
        raise MappingError("numeric value expected", [issue("data-type", path, "not a number")]) from None
    qty: dict[str, Any] = {"value": int(number) if number.is_integer() else number}
    if unit:
        qty["unit"] = unit.split("^")[0]
    return qty


def _immunization(p: Parsed, ctx: MapContext, facility: str, patient: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for n, rxa in enumerate(p.segments("RXA"), 1):
        vaccine = _concept(rxa, 5, facility, "vaccine")
        when = _ts(get(rxa, 3), ctx, f"RXA[{n}]-3")
        if vaccine is None or when is None:
            raise MappingError(
                "vaccine or date missing", [issue("required", f"RXA[{n}]", "RXA-3 and RXA-5 are required")]
            )
        status = get(rxa, 20).upper()
        imm: dict[str, Any] = {
            "resourceType": "Immunization",
            "id": stable_id("Immunization", facility, patient["id"], vaccine["coding"][0]["code"], when),
            "status": "not-done" if status in ("RE", "NA") else "completed",
            "vaccineCode": vaccine,
            "patient": {"reference": f"Patient/{patient['id']}"},
            "occurrenceDateTime": when,
        }
        lot = get(rxa, 15)
        if lot:
            imm["lotNumber"] = lot
        amount = get(rxa, 6)
        if amount and amount != "999":
            imm["doseQuantity"] = _qty(amount, get(rxa, 7), f"RXA[{n}]-6")
        out.append(imm)
    if not out:
        raise MappingError("no RXA segment", [issue("required", "RXA", "VXU^V04 without administration")])
    return out


def map_message(record: Record, ctx: MapContext) -> Mapped:
    """One HL7 v2 message -> FHIR resources (see module docstring for the supported events)."""
    p = parse(normalise(decode(record.raw)))
    facility = ctx.source.facility or p.sending_facility or "unknown"
    kind = f"{p.msg_type}^{p.event}"
    event_time = epoch(_ts(p.timestamp, ctx, "MSH-7"), ctx.tz)
    if p.msg_type == "ADT" and p.event == "A40":
        patient = _patient(p, ctx, facility)
        mrg = p.segments("MRG")
        old = get(mrg[0], 1) if mrg else ""
        if not old:
            raise MappingError(
                "MRG-1 missing", [issue("required", "MRG-1", "merge without prior identifier")]
            )
        merged = f"Patient/{stable_id('Patient', facility, old)}"
        return Mapped(
            [patient], event_time=event_time, ordered=True, merge=(f"Patient/{patient['id']}", merged)
        )
    if p.msg_type == "ADT":
        if p.event not in _ADT_PERSON_ENCOUNTER | _ADT_PERSON_ONLY:
            raise MappingError(
                f"ADT^{p.event} is not handled",
                [issue("unsupported-event", "MSH-9.2", f"ADT event {p.event} is not supported")],
            )
        patient = _patient(p, ctx, facility)
        resources = [patient]
        if p.event in _ADT_PERSON_ENCOUNTER:
            enc = _encounter(p, ctx, facility, patient)
            if enc is not None:
                resources.append(enc)
            resources.extend(_conditions(p, ctx, facility, patient, enc))
        return Mapped(resources, event_time=event_time, ordered=True)
    handlers = {"ORU^R01": _oru, "RDE^O11": _medication, "RDS^O13": _medication, "VXU^V04": _immunization}
    handler = handlers.get(kind)
    if handler is None:
        raise MappingError(
            f"{kind} is not handled",
            [issue("unsupported-message-type", "MSH-9", f"message type {kind} is not supported")],
        )
    patient = _patient(p, ctx, facility)
    return Mapped([patient, *handler(p, ctx, facility, patient)], event_time=event_time, ordered=True)


register_mapper(CONNECTOR, map_message)
