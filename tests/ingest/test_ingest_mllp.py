"""MLLP over real TCP sockets: ACK AA / AE / AR with ERR segments, duplicates, bad input."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import func, select

from rhip.ingest.mllp import MLLPListener, ack_of, frame, send_messages
from rhip.ingest.pipeline import Pipeline
from rhip.store.schema import resource as resource_table

GOOD = (
    "MSH|^~\\&|HIS|H001|RHIP|REGION|20261101083000||ADT^A01^ADT_A01|CTRL-{n}|P|2.5|||||CHN||UNICODE UTF-8\r"
    "EVN|A01|20261101083000\r"
    "PID|1||MRN{n}^^^H001^MR~110101199003074514^^^CHN^NNCHN||张^三||19900307|M|||北京市东城区^^北京^^100010\r"
    + "|".join(
        ["PV1", "1", "I", "W1^101^1", "", "", "", "D01^李^四", "", "", "内科"]
        + [""] * 8
        + ["V{n}"]
        + [""] * 24
        + ["20261101080000"]
    )
    + "\r"
)
ORU = (
    "MSH|^~\\&|LIS|H001|RHIP|REGION|20261101090000||ORU^R01^ORU_R01|LAB-{n}|P|2.5\r"
    "PID|1||MRN{n}^^^H001^MR||张^三||19900307|M\r"
    "OBR|1||F{n}|24331-1^Lipid panel^LN|||20261101083000\r"
    "OBX|1|NM|2093-3^Cholesterol^LN||{value}|mmol/L|3.0-5.2|N|||F|||20261101083000\r"
)


def _run(pipeline: Pipeline, messages: list[Any], connections: int = 1) -> list[str]:
    async def main() -> list[str]:
        listener = MLLPListener(pipeline, "127.0.0.1", 0)
        await listener.start()
        try:
            per = [messages[i::connections] for i in range(connections)]
            results = await asyncio.gather(*[send_messages("127.0.0.1", listener.port, p) for p in per])
        finally:
            await listener.stop()
        return [a for r in results for a in r]

    return asyncio.run(main())


def test_good_message_gets_aa_and_is_stored(pipeline: Pipeline) -> None:
    acks = _run(pipeline, [GOOD.format(n=1), ORU.format(n=1, value="4.8")])
    assert [ack_of(a)["code"] for a in acks] == ["AA", "AA"]
    assert ack_of(acks[0])["control_id"] == "CTRL-1"
    assert pipeline.store.count("Patient") == 1
    assert pipeline.store.count("Encounter") == 1
    assert pipeline.store.count("Observation") == 1
    assert pipeline.store.count("DiagnosticReport") == 1


def test_redelivery_is_acknowledged_but_not_stored_twice(sqlite_pipeline: Pipeline) -> None:
    msg = GOOD.format(n=2)
    acks = _run(sqlite_pipeline, [msg, msg, msg])
    assert [ack_of(a)["code"] for a in acks] == ["AA", "AA", "AA"]
    report = next(iter(sqlite_pipeline.store.history("Patient").entries))
    assert report.version_id == 1
    rep = next(iter(_reports(sqlite_pipeline)))
    assert (rep["received"], rep["stored"], rep["duplicates"]) == (3, 1, 2)


def _reports(pipeline: Pipeline) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from rhip.ingest.schema import ingest_batch

    with pipeline.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(ingest_batch))]


def test_content_error_gets_ae_with_err_segment(sqlite_pipeline: Pipeline) -> None:
    bad = ORU.format(n=3, value="not-a-number")
    (ack,) = _run(sqlite_pipeline, [bad])
    parsed = ack_of(ack)
    assert parsed["code"] == "AE"
    assert parsed["errors"] and "data-type" in parsed["errors"][0] and "OBX[1]-5" in parsed["errors"][0]
    assert "not-a-number" not in ack  # never echo the record's data


def test_unsupported_type_and_broken_header_get_ar(sqlite_pipeline: Pipeline) -> None:
    unsupported = "MSH|^~\\&|X|H001|Y|Z|20261101||SIU^S12|S-1|P|2.5\rPID|1||M1^^^H001^MR||A^B\r"
    no_msh = "PID|1||M1^^^H001^MR||A^B\r"
    wrong_delims = "MSH#^~\\&#X#H001#Y#Z#20261101##ADT^A01#W-1#P#2.5\rPID|1||M1\r"
    acks = _run(sqlite_pipeline, [unsupported, no_msh, wrong_delims])
    codes = [ack_of(a)["code"] for a in acks]
    assert codes[0] == "AR" and "200^Unsupported message type" in acks[0]
    assert codes[1] == "AR" and "msh-missing" in acks[1]
    assert codes[2] in ("AR", "AE") and "ERR|" in acks[2]
    assert sqlite_pipeline.store.count("Patient") == 0


def test_many_connections_are_batched(sqlite_pipeline: Pipeline) -> None:
    messages = [GOOD.format(n=i) for i in range(200)]
    acks = _run(sqlite_pipeline, messages, connections=8)
    assert len(acks) == 200 and all(ack_of(a)["code"] == "AA" for a in acks)
    assert sqlite_pipeline.store.count("Patient") == 200


def test_frame_is_vt_fs_cr() -> None:
    assert frame("MSH|x") == b"\x0bMSH|x\x1c\r"


def test_batch_frame_stores_every_message(sqlite_pipeline: Pipeline) -> None:
    """A frame carrying an FHS/BHS batch: every message is stored, one ACK answers the frame."""
    batch = (
        "FHS|^~\\&|HIS|H001\rBHS|^~\\&|HIS|H001\r" + GOOD.format(n=70) + GOOD.format(n=71) + "BTS|2\rFTS|1\r"
    )
    (ack,) = _run(sqlite_pipeline, [batch])
    assert ack_of(ack)["code"] == "AA"
    assert sqlite_pipeline.store.count("Patient") == 2


def test_gb18030_message_is_stored_as_its_header_declares(sqlite_pipeline: Pipeline) -> None:
    """The listener hands the mapper the bytes as sent, so MSH-18 still describes them."""
    msg = (
        "MSH|^~\\&|HIS|H002|RHIP|R|20261101083000||ADT^A28^ADT_A05|GB-1|P|2.5|||||CHN|GB 18030-2000\r"
        "PID|1||M1^^^H002^MR||王^芳||19800506|F\r"
    )
    (ack,) = _run(sqlite_pipeline, [msg.encode("gb18030")])
    assert ack_of(ack)["code"] == "AA", ack
    assert "|ACK^A28^ACK|" in ack  # MSH-9 of the ACK names the event it answers
    patient = next(iter(sqlite_pipeline.store.iter_current("Patient")))[0]
    assert patient is not None and patient["name"][0]["text"] == "王芳"


def test_invalid_encoding_characters_and_bad_dates_name_their_hl7_error_codes(
    sqlite_pipeline: Pipeline,
) -> None:
    clashing = GOOD.format(n=80).replace("MSH|^~\\&|", "MSH|^^\\&|", 1)  # component = repetition
    bad_date = GOOD.format(n=81).replace("|19900307|", "|1990-3-7|", 1)
    delims, date = _run(sqlite_pipeline, [clashing, bad_date])
    assert ack_of(delims)["code"] == "AR" and "|102^Data type error^HL70357|" in delims
    assert "delimiters:" in delims
    assert ack_of(date)["code"] == "AE" and "ERR||PID-7|102^Data type error^HL70357|" in date
    assert sqlite_pipeline.store.count("Patient") == 0


def _facility_reports(pipeline: Pipeline, messages: list[str]) -> dict[str, Any]:
    """The listener's per-sending-facility reports after ``messages`` went over one connection."""

    async def main() -> dict[str, Any]:
        listener = MLLPListener(pipeline, "127.0.0.1", 0)
        await listener.start()
        try:
            await send_messages("127.0.0.1", listener.port, messages)
        finally:
            await listener.stop()
        return listener.reports

    return asyncio.run(main())


def test_each_facility_is_credited_the_resources_its_messages_wrote(sqlite_pipeline: Pipeline) -> None:
    """The reconciliation's "resources" column per facility: what its messages created or updated."""
    other = [GOOD.format(n=n).replace("|HIS|H001|", "|HIS|H002|").replace("^H001^", "^H002^") for n in (4, 5)]
    first = _facility_reports(sqlite_pipeline, [GOOD.format(n=n) for n in (1, 2, 3)] + other)
    with sqlite_pipeline.store.engine.connect() as conn:
        stored = conn.execute(
            select(func.count()).select_from(resource_table).where(resource_table.c.res_type != "Provenance")
        ).scalar_one()
    assert first["H001"].resources_written > 0 and first["H002"].resources_written > 0
    assert first["H001"].resources_written + first["H002"].resources_written == stored
    per_message = first["H002"].resources_written // 2
    resent = GOOD.format(n=1).replace("|CTRL-1|", "|CTRL-1-AGAIN|")  # a new message: new versions
    again = _facility_reports(sqlite_pipeline, [resent])
    assert (again["H001"].stored, again["H001"].resources_written) == (1, per_message)
    assert set(again) == {"H001"}
