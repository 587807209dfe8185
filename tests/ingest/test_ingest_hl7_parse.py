"""The split-based HL7 v2 parser gives the same field values as python-hl7 on the reference samples."""

from __future__ import annotations

from pathlib import Path

import hl7
import pytest

from rhip.ingest import hl7v2

SAMPLES = sorted((Path(__file__).resolve().parents[1] / "data" / "hl7v2" / "messages").glob("*.hl7"))


def _messages(path: Path) -> list[str]:
    return [m for m in hl7v2.split_messages(hl7v2.decode(path.read_bytes())) if m.startswith("MSH")]


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_fields_match_python_hl7(path: Path) -> None:
    for text in _messages(path):
        ours = hl7v2.parse(text).message
        theirs = hl7.parse(text)
        assert len(ours) == len(theirs)
        for mine, ref in zip(ours, theirs, strict=True):
            assert list(mine) == [str(f) for f in ref]
            assert mine.separators == ref.separators


def test_custom_delimiters_are_honoured() -> None:
    text = "MSH#$~\\%#HIS#H1#R#R#20261101##ADT$A28#C1#P#2.5\rPID#1##M1$$$H1$MR~X9##WANG$FANG%Q"
    parsed = hl7v2.parse(text)
    assert (parsed.msg_type, parsed.event, parsed.control_id) == ("ADT", "A28", "C1")
    pid = hl7v2.segments(parsed.message, "PID")[0]
    assert hl7v2.field_reps(pid, 3) == [["M1", "", "", "H1", "MR"], ["X9"]]
    assert hl7v2.get(pid, 5, 2, sub=2) == "Q"


def test_parse_is_at_least_ten_times_faster_than_python_hl7() -> None:
    import time

    texts = [m for p in SAMPLES for m in _messages(p)] * 5
    t = time.perf_counter()
    for text in texts:
        hl7.parse(text)
    reference = time.perf_counter() - t
    t = time.perf_counter()
    for text in texts:
        hl7v2.parse(text)
    assert time.perf_counter() - t < reference / 10
