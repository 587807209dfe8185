"""hl7v2.parse: the segment index the mappers read, against python-hl7's own segment search."""

from __future__ import annotations

from pathlib import Path

import pytest

from rhip.ingest.hl7v2 import decode, message_bytes, normalise, parse, segments
from rhip.ingest.model import MappingError

SAMPLES = sorted((Path(__file__).resolve().parents[1] / "data" / "hl7v2" / "messages").glob("*.hl7"))


def test_the_index_holds_every_segment_in_order() -> None:
    checked = 0
    for path in SAMPLES:
        for _line, raw, _overlong in message_bytes([path.read_bytes()]):
            try:
                p = parse(normalise(decode(raw)))
            except MappingError:
                continue
            names = {str(s[0]) for s in p.message}
            for name in names | {"ZZZ"}:
                assert p.segments(name) == segments(p.message, name)
                assert all(a is b for a, b in zip(p.segments(name), segments(p.message, name), strict=True))
            assert sum(len(v) for v in p.by_id.values()) == len(p.message)
            checked += 1
    assert checked >= 30


@pytest.mark.parametrize("missing", ["PV1", "DG1", "MRG"])
def test_an_absent_segment_is_an_empty_list(missing: str) -> None:
    p = parse("MSH|^~\\&|A|B|C|D|20261101||ADT^A04|X1|P|2.5\rPID|1||M1^^^B^MR||A^B")
    assert p.segments(missing) == [] and len(p.segments("PID")) == 1
