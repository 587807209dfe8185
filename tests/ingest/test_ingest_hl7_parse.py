"""hl7v2.parse: the segment index the mappers read, against python-hl7's own segment search; the
tree python-hl7 builds, and reading fields from it."""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

import hl7
import pytest

from rhip.ingest import hl7v2
from rhip.ingest.hl7v2 import Containers, decode, field_reps, get, message_bytes, normalise, parse, segments
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


def _messages() -> list[str]:
    """Every readable sample message, the benchmark's and messages built to stress the separators."""
    texts: list[str] = []
    for path in SAMPLES:
        for _line, raw, _overlong in message_bytes([path.read_bytes()]):
            try:
                texts.append(normalise(decode(raw)))
            except MappingError:
                continue
    head = "MSH|^~\\&|A|B|C|D|20261101||ADT^A04|X1|P|2.5\r"
    texts.append(head + "PID|1||a&b^c~~d^^e&&f~||x^y&z^^~^|~|^|&|^&^||~~| a ^ b ~ c |&&|^^^|~^~&~")
    # other delimiters: each set has parse plans of its own
    texts.append("MSH#*!\\%#A#B#C#D#20261101##ADT*A04#X2#P#2.5\rPID#1##a%b*c!!d**e%%f!##x*y%z")
    texts.append("MSH|^~\\&|A|B|C|D|20261101||ADT^A04|X3|P|2.5\rPID|1||a\\F\\b^c\\S\\d")
    texts.append("MSH|*~\\&|A|B|C|D|20261101||ADT*A04|X4|P|2.5\rPID|1||a*b^c~d&e")
    rnd = random.Random(11)
    for _ in range(500):
        texts.append(head + "PID|" + "".join(rnd.choice("ab ~^&|") for _ in range(rnd.randint(0, 30))))
    return texts


def _same_tree(a: Any, b: Any) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return type(a) is type(b) and a == b
    return (
        isinstance(b, type(a))
        and (a.separator, a.separators, a.esc) == (b.separator, b.separators, b.esc)
        and len(a) == len(b)
        and all(_same_tree(x, y) for x, y in zip(a, b, strict=True))
    )


def test_the_parse_is_python_hl7s_own_with_cheaper_containers() -> None:
    """python-hl7 parses every message, with its parse plans reused; the containers it builds
    through the factory hook are its own classes (subclasses), holding the same tree as a plain
    ``hl7.parse``."""
    checked = 0
    for text in _messages():
        try:
            p = parse(text)
        except MappingError:
            continue
        assert type(p.message) is Containers.create_message
        assert all(type(seg) is Containers.create_segment for seg in p.message)
        assert _same_tree(hl7.parse(text), p.message)
        assert str(p.message) == str(hl7.parse(text))
        checked += 1
    assert checked >= 500
    assert {sep for sep, _esc in hl7v2._PLANS} >= {"\r|~^&", "\r#!*%", "\r|~*&"}


def test_reading_the_tree_gives_what_splitting_the_text_gives() -> None:
    """get and field_reps read python-hl7's tree without joining fields back into text: every
    field, repetition, component and subcomponent reads as splitting the field's text does."""
    looked_up = 0
    for text in _messages():
        try:
            p = parse(text)
        except MappingError:
            continue
        for seg in p.message:
            for f in range(len(seg) + 2):
                assert field_reps(seg, f) == hl7v2._field_reps_text(seg, f)
                for rep, comp, sub in itertools.product(range(1, 4), range(1, 6), range(1, 3)):
                    assert get(seg, f, comp, rep, sub) == hl7v2._get_text(seg, f, comp, rep, sub)
                    looked_up += 1
    assert looked_up > 100_000
