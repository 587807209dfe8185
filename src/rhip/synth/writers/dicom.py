"""DICOM files of imaging studies: real headers, an 8x8 pixel matrix, one instance per study.

Written to ``dicom/<facility>/<study_uid>/<instance_uid>.dcm`` (Patient ID = the facility's record
number, issuer = facility code) so that DICOM ingest can link studies to patients and encounters.
"""

from __future__ import annotations

import random
import struct
from typing import Any

from rhip.synth.model import Encounter, Life
from rhip.synth.writers.base import Appends, Buffer, Writer, register_writer

_SOP_CLASS = {
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
}


_LONG_VRS = {"OB", "OW", "SQ", "UN", "UT", "UC", "UR"}


def _pad(vr: str, raw: bytes) -> bytes:
    if len(raw) % 2:
        raw += b"\x00" if vr in ("UI", "OB") else b" "
    return raw


def _element(tag: int, vr: str, value: Any) -> bytes:
    """One explicit-VR little-endian element; sequences are written with their explicit length.

    ``value`` is text, raw bytes, or (for SQ) a list of items, each a list of (tag, VR, value).
    """
    if vr == "SQ":
        items = b""
        for item in value:
            body = b"".join(_element(t, v, x) for t, v, x in sorted(item, key=lambda e: e[0]))
            items += struct.pack("<HHI", 0xFFFE, 0xE000, len(body)) + body
        raw = items
    else:
        raw = _pad(vr, value.encode("utf-8") if isinstance(value, str) else bytes(value))
    group, elem = tag >> 16, tag & 0xFFFF
    if vr in _LONG_VRS:
        return struct.pack("<HH2sHI", group, elem, vr.encode(), 0, len(raw)) + raw
    return struct.pack("<HH2sH", group, elem, vr.encode(), len(raw)) + raw


def dicom_bytes(enc: Encounter) -> bytes:
    """The Part 10 file of the encounter's study (explicit VR little endian, UTF-8 text).

    Encoded directly (a fixed, small set of elements) because building pydicom datasets costs
    ten times more and imaging is the slowest part of a large region; pydicom reads the result.
    """
    im = enc.imaging
    if im is None:
        raise ValueError("encounter has no imaging study")
    sp = enc.patient
    sop_class = _SOP_CLASS.get(im.modality, "1.2.840.10008.5.1.4.1.1.7")
    meta_body = b"".join(
        [
            _element(0x00020001, "OB", b"\x00\x01"),
            _element(0x00020002, "UI", sop_class),
            _element(0x00020003, "UI", im.instance_uid),
            _element(0x00020010, "UI", "1.2.840.10008.1.2.1"),
            _element(0x00020012, "UI", "2.25.301254785340713917409137625487291364021"),
            _element(0x00020013, "SH", "RHIP_SYNTH_1"),
        ]
    )
    meta = _element(0x00020000, "UL", struct.pack("<I", len(meta_body))) + meta_body
    day, time = enc.start.strftime("%Y%m%d"), enc.start.strftime("%H%M%S")
    rng = random.Random(im.instance_uid)
    code_item = [(0x00080100, "SH", im.code), (0x00080102, "SH", "ICD9CM3-CN"), (0x00080104, "LO", im.name)]
    inst_item = [
        (0x00080100, "SH", sp.facility.code),
        (0x00080102, "SH", "RHIP-ORG"),
        (0x00080104, "LO", sp.facility.name),
    ]
    other_ids = [(0x00100020, "LO", sp.citizen_id or ""), (0x00100021, "LO", "CITIZEN_ID")]
    elements: list[tuple[int, str, object]] = [
        (0x00080005, "CS", "ISO_IR 192"),
        (0x00080016, "UI", sop_class),
        (0x00080018, "UI", im.instance_uid),
        (0x00080020, "DA", day),
        (0x00080021, "DA", day),
        (0x00080023, "DA", day),
        (0x00080030, "TM", time),
        (0x00080031, "TM", time),
        (0x00080033, "TM", time),
        (0x00080050, "SH", enc.id[:16]),
        (0x00080060, "CS", im.modality),
        (0x00080080, "LO", sp.facility.name),
        (0x00080082, "SQ", [inst_item]),
        (0x00080090, "PN", enc.practitioner.name),
        (0x00081030, "LO", im.name),
        (0x00081032, "SQ", [code_item]),
        (0x00080201, "SH", "+0800"),
        (0x00100010, "PN", sp.name),
        (0x00100020, "LO", sp.source_id),
        (0x00100021, "LO", sp.facility.code),
        (0x00100030, "DA", sp.birth.strftime("%Y%m%d")),
        (0x00100040, "CS", "M" if sp.sex == "male" else "F"),
        (0x00101002, "SQ", [other_ids]),
        (0x00180015, "CS", im.body_part),
        (0x0020000D, "UI", im.uid),
        (0x0020000E, "UI", im.series_uid),
        (0x00200010, "SH", enc.id[:16]),
        (0x00200011, "IS", "1"),
        (0x00200013, "IS", "1"),
        (0x00280002, "US", struct.pack("<H", 1)),
        (0x00280004, "CS", "MONOCHROME2"),
        (0x00280010, "US", struct.pack("<H", 8)),
        (0x00280011, "US", struct.pack("<H", 8)),
        (0x00280100, "US", struct.pack("<H", 8)),
        (0x00280101, "US", struct.pack("<H", 8)),
        (0x00280102, "US", struct.pack("<H", 7)),
        (0x00280103, "US", struct.pack("<H", 0)),
        (0x7FE00010, "OB", rng.randbytes(64)),
    ]
    body = b"".join(_element(t, vr, v) for t, vr, v in sorted(elements, key=lambda e: e[0]))
    return b"\x00" * 128 + b"DICM" + meta + body


@register_writer("dicom")
class DicomWriter(Writer):
    """One file per study; the index ``dicom/studies.csv`` lists study, facility and encounter."""

    def headers(self) -> dict[str, bytes]:
        return {"dicom/studies.csv": b"study_uid,facility_code,patient_id,accession_number,modality,path\n"}

    def render(self, lives: list[Life], chunk: int) -> Appends:
        buf = Buffer()
        for life in lives:
            for enc in life.encounters:
                im = enc.imaging
                if im is None or enc.patient.facility.tier not in ("tertiary", "secondary"):
                    continue
                fac = enc.patient.facility.code
                rel = f"dicom/{fac}/{im.uid}/{im.instance_uid}.dcm"
                path = self.out / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(dicom_bytes(enc))
                buf.put(
                    "dicom/studies.csv",
                    f"{im.uid},{fac},{enc.patient.source_id},{enc.id[:16]},{im.modality},{rel}\n".encode(),
                )
        return buf.result()
