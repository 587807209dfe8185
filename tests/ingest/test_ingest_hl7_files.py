"""HL7 v2 files: streamed, each message decoded by its own MSH-18, credited to its sender."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest
from sqlalchemy import select

from rhip.ingest import hl7v2
from rhip.ingest.pipeline import Pipeline
from rhip.ingest.runner import ingest_file
from rhip.ingest.schema import ingest_quarantine

MSG = (
    "MSH|^~\\&|HIS|{fac}|R|R|20261101083000||ADT^A28^ADT_A05|{ctrl}|P|2.5|||||CHN|{charset}\r"
    "PID|1||{mrn}^^^{fac}^MR||{family}^芳||19800506|F\r"
)


def _msg(n: int, family: str = "王", charset: str = "", fac: str = "H1") -> str:
    return MSG.format(fac=fac, ctrl=f"C{n}", mrn=f"M{n}", family=family, charset=charset)


def _names(pipeline: Pipeline) -> set[str]:
    return {p["name"][0]["text"] for p, *_ in pipeline.store.iter_current("Patient") if p}


def _quarantined(pipeline: Pipeline) -> list[tuple[str, str]]:
    q = ingest_quarantine
    with pipeline.engine.connect() as conn:
        rows = conn.execute(select(q.c.position, q.c.reasons).order_by(q.c.q_id))
        return [(r.position, r.reasons) for r in rows]


def test_gb18030_file_is_read_as_its_header_declares(sqlite_pipeline: Pipeline, tmp_path: Path) -> None:
    path = tmp_path / "gb.hl7"
    path.write_bytes(_msg(1, charset="GB 18030-2000").encode("gb18030"))
    rep = ingest_file(sqlite_pipeline, path, "H1")
    assert (rep.stored, rep.quarantined) == (1, 0), _quarantined(sqlite_pipeline)
    assert _names(sqlite_pipeline) == {"王芳"}


def test_one_undecodable_message_does_not_take_the_file_with_it(
    sqlite_pipeline: Pipeline, tmp_path: Path
) -> None:
    broken = _msg(2).encode().replace("王".encode(), b"\xff\xfe")
    path = tmp_path / "three.hl7"
    path.write_bytes(_msg(1, "李").encode() + broken + _msg(3, "赵").encode("gb18030"))
    rep = ingest_file(sqlite_pipeline, path, "H1")
    assert (rep.received, rep.stored, rep.quarantined) == (3, 2, 1) and rep.reconciled
    assert _names(sqlite_pipeline) == {"李芳", "赵芳"}
    ((position, reasons),) = _quarantined(sqlite_pipeline)
    assert position == "three.hl7:3" and '"encoding"' in reasons  # file and line of its MSH


@pytest.mark.parametrize("ending", [b"\r", b"\n", b"\r\n"], ids=["CR", "LF", "CRLF"])
def test_segment_endings_and_reads_cut_anywhere_give_the_same_messages(ending: bytes) -> None:
    text = "\ufeff" + "\r\n".join(
        ["FHS|^~\\&|HIS", "BHS|^~\\&|HIS", *_msg(1).split("\r")[:2], "", *_msg(2).split("\r")[:2], "BTS|2"]
    )
    data = text.encode().replace(b"\r\n", ending)
    want = [(3, _msg(1).rstrip("\r").encode(), 0), (6, _msg(2).rstrip("\r").encode(), 0)]
    assert list(hl7v2.message_bytes([data])) == want
    for cut in range(1, len(data)):  # a CRLF split between two reads is still one line break
        assert list(hl7v2.message_bytes([data[:cut], data[cut:]])) == want, cut


def test_file_without_facility_is_credited_to_its_sender(sqlite_pipeline: Pipeline, tmp_path: Path) -> None:
    path = tmp_path / "a.hl7"
    path.write_text(_msg(1, fac="H77"), encoding="utf-8")
    rep = ingest_file(sqlite_pipeline, path, None)
    assert rep.source.facility == "H77" and rep.stored == 1
    patient = next(iter(sqlite_pipeline.store.iter_current("Patient")))[0]
    assert patient is not None and patient["meta"]["source"].startswith("urn:rhip:ingest:H77/hl7v2/a.hl7:1")


@pytest.mark.slow
def test_a_large_hl7_file_streams_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.hl7"
    with path.open("w", encoding="utf-8") as fh:
        for n in range(130_000):
            fh.write(_msg(n) + "\r\n")
    assert path.stat().st_size > 15_000_000
    tracemalloc.start()
    try:
        count = sum(1 for _ in hl7v2.iter_hl7_file(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 130_000
    assert peak < 6_000_000, peak  # a read block or two, not the 15 MB file
