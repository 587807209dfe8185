"""Fuzz on PostgreSQL, which refuses what SQLite keeps: NUL, over-wide and odd values in every
HL7 field (MSH-4 facility, MSH-10 control id, PID, OBX) end stored or quarantined, never lost.

A few examples only, so the suite stays fast; ``RHIP_FUZZ_DB=postgresql`` runs every fuzz test on
PostgreSQL (docs/ingest-requirements.md, *Fuzzing*).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fuzzing import PgStoreFactory, assert_batch_sound, fuzz_settings, shown_on_failure
from hypothesis import given
from hypothesis import strategies as st

from rhip.ingest.runner import ingest_file
from rhip_testkit import PG_ADMIN_URL, pg_available

pytestmark = pytest.mark.postgres

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "hl7v2" / "messages"
REFUSED_BY_POSTGRESQL = [b"\x00", b"a\x00b", b"\xed\xa0\x80", b"\xff", b"X" * 300, b"9" * 40]


@pytest.fixture(scope="module")
def pg_factory() -> Iterator[PgStoreFactory]:
    """One template database for the module; each example gets a clone of it."""
    if not pg_available():
        pytest.skip("PostgreSQL not reachable")
    factory = PgStoreFactory(PG_ADMIN_URL)
    try:
        yield factory
    finally:
        factory.close()


def _segments() -> list[list[bytes]]:
    text = (SAMPLES / "ORU-R01-01.hl7").read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    return [s.split(b"|") for s in text.strip(b"\r").split(b"\r")]


@fuzz_settings(default=12)
@given(data=st.data())
def test_values_postgresql_refuses_in_any_hl7_field(
    data: st.DataObject, pg_factory: Any, tmp_path: Path
) -> None:
    segs = _segments()
    s = data.draw(st.integers(0, len(segs) - 1))
    f = data.draw(st.integers(2 if s == 0 else 1, max(len(segs[s]) - 1, 2)))
    if f < len(segs[s]):
        segs[s][f] = data.draw(st.sampled_from(REFUSED_BY_POSTGRESQL))
    raw = b"\r".join(b"|".join(seg) for seg in segs) + b"\r"
    with shown_on_failure(message=raw), pg_factory.pipeline() as pipeline:
        path = tmp_path / f"example-{pg_factory.count}.hl7"
        path.write_bytes(raw)
        assert_batch_sound(pipeline, ingest_file(pipeline, path, None), received=1)
