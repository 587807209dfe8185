"""HL7 v2.5 messages of the secondary hospitals whose native system is an HL7 v2 interface engine.

ADT^A28 announces a new patient, A04 registers outpatient visits, A01/A03 admit and discharge,
A08 updates a visit, A31 updates person data, A40 merges a duplicate record into the surviving one;
ORU^R01 carries lab results and RDE^O11 pharmacy orders. Segments end with CR; messages are
concatenated in ``hl7v2/<facility>/messages.hl7`` each followed by a line feed.
"""

from __future__ import annotations

import functools
from datetime import datetime

from rhip.synth.model import Encounter, Life, SourcePatient
from rhip.synth.writers.base import Appends, Buffer, Writer, register_writer

_ESC = str.maketrans({"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\"})
_CLASS = {"emergency": "E", "inpatient": "I", "delivery": "I"}


def esc(value: object) -> str:
    """HL7 escaping of a field value."""
    return str(value).translate(_ESC)


@functools.lru_cache(maxsize=8192)  # one visit's messages repeat the same instants
def hl7ts(value: datetime) -> str:
    """HL7 DTM with the +0800 offset."""
    s = value.isoformat()  # YYYY-MM-DDTHH:MM:SS (no microseconds are generated)
    return s[0:4] + s[5:7] + s[8:10] + s[11:13] + s[14:16] + s[17:19] + "+0800"


class _Messages:
    def __init__(self, facility: str) -> None:
        self.facility = facility
        self.n = 0
        self.out: list[str] = []

    def add(
        self, when: datetime, mtype: str, event: str, structure: str, segments: list[str], key: str
    ) -> None:
        self.n += 1
        control = f"{key}{self.n:04d}"
        msh = (
            f"MSH|^~\\&|HIS|{self.facility}|RHIP|RHIP|{hl7ts(when)}||{mtype}^{event}^{structure}|{control}"
            "|P|2.5|||AL|NE|CHN|UNICODE UTF-8"
        )
        self.out.append("\r".join([msh, *segments]) + "\r\n")


def segment(name: str, fields: dict[int, str]) -> str:
    """A segment from its non-empty fields, keyed by HL7 field number."""
    top = max(fields)
    return "|".join([name, *(fields.get(i, "") for i in range(1, top + 1))])


def pid(sp: SourcePatient, address: str | None = None) -> str:
    """PID segment: PID-3 carries the MRN (first) and the person's cards; ``address`` overrides PID-11."""
    ids = [
        f"{esc(value)}^^^{sp.facility.code if kind in ('MR', 'VC') else kind}^{kind}"
        for _s, value, kind in sp.identifiers
    ]
    family = sp.name[: len(sp.resident.surname)]
    fields = {
        1: "1",
        3: "~".join(ids),
        5: f"{esc(family)}^{esc(sp.name[len(family) :])}",
        7: f"{sp.birth:%Y%m%d}",
        8: "M" if sp.sex == "male" else "F",
        11: f"{esc(address or sp.address)}^^^^^CHN",
    }
    if sp.phone:
        fields[13] = f"^PRN^CP^^^^^^^^^{sp.phone}"
    if sp.resident.death:
        fields[29], fields[30] = f"{sp.resident.death:%Y%m%d}", "Y"
    return segment("PID", fields)


def pv1(enc: Encounter) -> str:
    """PV1 segment: class, department, attending doctor (licence), visit number, discharge disposition."""
    doc = enc.practitioner
    inpatient = enc.kind in ("inpatient", "delivery")
    fields = {
        1: "1",
        2: _CLASS.get(enc.kind, "O"),
        3: f"{esc(enc.department)}^^^{enc.patient.facility.code}",
        7: f"{doc.licence}^{esc(doc.name)}",
        19: enc.id,
        44: hl7ts(enc.start),
    }
    if inpatient:
        fields[36] = "20" if enc.outcome == "died" else "01"
        fields[45] = hl7ts(enc.end)
    return segment("PV1", fields)


def dg1(enc: Encounter) -> list[str]:
    return [
        segment(
            "DG1",
            {
                1: str(i + 1),
                3: f"{code}^{esc(name)}^ICD10-CN",
                5: hl7ts(enc.start),
                6: "A" if enc.kind == "outpatient" else "F",
            },
        )
        for i, (code, name) in enumerate(enc.diagnoses)
    ]


def _oru(msgs: _Messages, enc: Encounter, p: str, key: str) -> None:
    segs = [
        p,
        pv1(enc),
        f"ORC|RE|{enc.id}L|{enc.id}L",
        f"OBR|1|{enc.id}L|{enc.id}L|LAB^检验^L|||{hl7ts(enc.start)}|||||||||{enc.practitioner.licence}^{esc(enc.practitioner.name)}||||||{hl7ts(enc.start)}|||F",
    ]
    for i, m in enumerate(enc.labs + enc.vitals):
        vtype = "ST" if isinstance(m.value, str) else "NM"
        rng = f"{m.low}-{m.high}" if m.low and m.high else ""
        segs.append(
            segment(
                "OBX",
                {
                    1: str(i + 1),
                    2: vtype,
                    3: f"{m.loinc}^{esc(m.name_zh)}^LN",
                    5: esc(m.value),
                    6: f"{esc(m.unit)}^^UCUM",
                    7: rng,
                    8: m.flag,
                    11: "F",
                    14: hl7ts(enc.start),
                },
            )
        )
    msgs.add(enc.start, "ORU", "R01", "ORU_R01", segs, key)


def _rde(msgs: _Messages, enc: Encounter, p: str, key: str) -> None:
    segs = [p, pv1(enc)]
    for i, med in enumerate(enc.meds):
        segs.append(
            f"ORC|NW|{enc.id}M{i}|||CM||||{hl7ts(enc.start)}|||{enc.practitioner.licence}^{esc(enc.practitioner.name)}"
        )
        segs.append(
            segment(
                "RXE",
                {
                    1: f"^^^{hl7ts(enc.start)}^^R",
                    2: f"{med.code}^{esc(med.name)}^{enc.patient.facility.code}~{med.atc}^^ATC",
                    3: f"{med.dose:g}",
                    5: esc(med.unit),
                    10: f"{med.dose * med.days:g}",
                    11: esc(med.unit),
                    12: "0",
                },
            )
        )
        segs.append(f"RXR|{esc(med.route)}")
    msgs.add(enc.start, "RDE", "O11", "RDE_O11", segs, key)


def _visit(msgs: _Messages, enc: Encounter, key: str) -> None:
    """A visit: A04 ... A08 (outpatient) or A01 ... A03 (admission), with its ORU and RDE between."""
    p = pid(enc.patient)
    first, last, structure = (
        ("A01", "A03", "ADT_A03") if enc.kind in ("inpatient", "delivery") else ("A04", "A08", "ADT_A01")
    )
    head = [f"EVN|{first}|{hl7ts(enc.start)}", p, pv1(enc)]
    msgs.add(enc.start, "ADT", first, "ADT_A01", head + (dg1(enc) if first == "A01" else []), key)
    if enc.labs or enc.vitals:
        _oru(msgs, enc, p, key)
    if enc.meds:
        _rde(msgs, enc, p, key)
    msgs.add(enc.end, "ADT", last, structure, [f"EVN|{last}|{hl7ts(enc.end)}", p, pv1(enc), *dg1(enc)], key)


def _record_updates(msgs: _Messages, life: Life, sp: SourcePatient, key: str) -> None:
    """A40 merging a duplicate record into its survivor, or A31 correcting a stale address."""
    last = max(e.end for e in life.encounters if e.patient is sp)
    if sp.merged_into is not None:
        survivor = next(
            s for s in life.sources if s.source_id == sp.merged_into and s.facility is sp.facility
        )
        mrg = f"MRG|{sp.source_id}^^^{sp.facility.code}^MR"
        msgs.add(last, "ADT", "A40", "ADT_A39", [f"EVN|A40|{hl7ts(last)}", pid(survivor), mrg], key)
    elif sp.resident.old_address and sp.address == sp.resident.old_address:
        segs = [f"EVN|A31|{hl7ts(last)}", pid(sp, sp.resident.address)]
        msgs.add(last, "ADT", "A31", "ADT_A05", segs, key)


@register_writer("hl7v2")
class Hl7Writer(Writer):
    """One batch file per facility; MSH-10 unique (chunk, message number)."""

    def render(self, lives: list[Life], chunk: int) -> Appends:
        per_fac: dict[str, _Messages] = {}
        for life in lives:
            seen: set[str] = set()
            for enc in life.encounters:
                sp = enc.patient
                if sp.facility.native != "hl7v2":
                    continue
                msgs = per_fac.setdefault(sp.facility.code, _Messages(sp.facility.code))
                key = f"{sp.facility.code}-{chunk:05d}-"
                if sp.source_id not in seen:
                    seen.add(sp.source_id)
                    msgs.add(
                        enc.start, "ADT", "A28", "ADT_A05", [f"EVN|A28|{hl7ts(enc.start)}", pid(sp)], key
                    )
                _visit(msgs, enc, key)
            for sp in life.sources:
                if sp.facility.native == "hl7v2" and sp.source_id in seen:
                    _record_updates(per_fac[sp.facility.code], life, sp, f"{sp.facility.code}-{chunk:05d}-")
        buf = Buffer()
        for code, msgs in per_fac.items():
            buf.put(f"hl7v2/{code}/messages.hl7", "".join(msgs.out).encode("utf-8"), msgs.n)
        return buf.result()
