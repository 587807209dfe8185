"""Fuzz: mutated HL7 v2 messages, from files and over a real MLLP socket; nothing crashes or is lost."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from fuzzing import ENCODINGS, assert_batch_sound, fuzz_settings, mutated_bytes, odd_text, shown_on_failure
from hypothesis import given
from hypothesis import strategies as st

from rhip.ingest.hl7v2 import iter_hl7_file
from rhip.ingest.mllp import MLLPListener, ack_of, send_messages
from rhip.ingest.pipeline import Pipeline
from rhip.ingest.runner import ingest_file

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "hl7v2" / "messages"


@pytest.fixture(scope="module")
def hl7_seeds(generated_region: Path) -> list[str]:
    """Every message the generator wrote (one per type/event is enough) and the reference samples."""
    seeds: dict[str, str] = {}
    paths = sorted((generated_region / "hl7v2").rglob("*.hl7")) + sorted(SAMPLES.glob("*.hl7"))
    for path in paths:
        for rec in iter_hl7_file(path):
            text = rec.raw.decode("utf-8", "replace")
            kind = text.split("\r", 1)[0].split("|")[8:9]
            seeds.setdefault(f"{path.name}:{kind}", text)
    return list(seeds.values())


@st.composite
def mutated_message(draw: st.DrawFn, text: str) -> bytes:
    """A message after 1-3 segment/field mutations, in some encoding, maybe with byte damage."""
    segs = [s.split("|") for s in text.split("\r")]
    for _ in range(draw(st.integers(1, 3))):
        s = draw(st.integers(0, len(segs) - 1))
        f = draw(st.integers(0, max(len(segs[s]) - 1, 0)))
        op = draw(
            st.sampled_from(["field", "field", "field", "component", "del-seg", "dup-seg", "del-field"])
        )
        if op == "field" and segs[s] and (s or f > 1):
            segs[s][f] = draw(odd_text)
        elif op == "component" and segs[s] and (s or f > 1):
            comps = segs[s][f].split("^")
            comps[draw(st.integers(0, len(comps) - 1))] = draw(odd_text)
            segs[s][f] = "^".join(comps)
        elif op == "del-seg" and len(segs) > 1:
            del segs[s]
        elif op == "dup-seg":
            segs.insert(s, list(segs[s]))
        elif op == "del-field" and segs[s] and f:
            del segs[s][f]
    sep = draw(st.sampled_from(["\r", "\r", "\n", "\r\n"]))
    raw = sep.join("|".join(s) for s in segs).encode(draw(st.sampled_from(ENCODINGS)), "replace")
    return draw(mutated_bytes(raw)) if draw(st.booleans()) else raw


@fuzz_settings(default=40)
@given(data=st.data())
def test_mutated_hl7_files_are_stored_or_quarantined(
    data: st.DataObject, hl7_seeds: list[str], store_factory: Any, tmp_path: Path
) -> None:
    """Broken segments and fields, odd unicode, wrong encodings and line endings, byte damage."""
    messages = [data.draw(mutated_message(data.draw(st.sampled_from(hl7_seeds)))) for _ in range(2)]
    with shown_on_failure(messages=messages), store_factory.pipeline() as pipeline:
        path = tmp_path / f"example-{store_factory.count}.hl7"
        path.write_bytes(b"\r".join(messages) + b"\r")
        report = ingest_file(pipeline, path, data.draw(st.sampled_from([None, "330402S01"])))
        assert_batch_sound(pipeline, report)


def _over_mllp(pipeline: Pipeline, messages: list[bytes]) -> tuple[list[str], MLLPListener]:
    async def main() -> tuple[list[str], MLLPListener]:
        listener = MLLPListener(pipeline, "127.0.0.1", 0, prepare_process=False)
        await listener.start()
        try:
            acks = await send_messages("127.0.0.1", listener.port, messages, timeout=60)
        finally:
            await listener.stop()
        return acks, listener

    return asyncio.run(main())


@fuzz_settings(default=10)
@given(data=st.data())
def test_mutated_messages_over_mllp_each_get_an_ack(
    data: st.DataObject, hl7_seeds: list[str], store_factory: Any
) -> None:
    """Every frame, however broken its message, gets AA/AE/AR on a connection that stays open."""
    messages = [
        data.draw(mutated_message(data.draw(st.sampled_from(hl7_seeds))))
        .replace(b"\x0b", b"")
        .replace(b"\x1c", b"")
        for _ in range(data.draw(st.integers(1, 3)))
    ]
    with shown_on_failure(messages=messages), store_factory.pipeline() as pipeline:
        acks, listener = _over_mllp(pipeline, messages)
        assert len(acks) == len(messages)
        assert all(ack_of(a)["code"] in ("AA", "AE", "AR") for a in acks), acks
        assert listener.report is not None
        assert_batch_sound(pipeline, listener.report, received=listener.report.received)
        assert all(r.reconciled for r in listener.reports.values())
        for a in acks:
            if ack_of(a)["code"] != "AA":
                assert ack_of(a)["errors"], a
