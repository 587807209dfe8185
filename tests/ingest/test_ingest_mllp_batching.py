"""MLLP micro-batching over real TCP: ACKs in order, mixed outcomes in one batch, per-sender order."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import select

from rhip.ingest.mllp import END, MLLPListener, ack_of, frame, send_messages, split_frames
from rhip.ingest.pipeline import Pipeline
from rhip.ingest.schema import ingest_quarantine


def adt(n: int, *, patient: int | None = None, family: str = "王", when: str = "20261101083000") -> str:
    return (
        f"MSH|^~\\&|HIS|H001|RHIP|REGION|{when}||ADT^A28^ADT_A05|C-{n}|P|2.5\r"
        f"PID|1||MRN{n if patient is None else patient}^^^H001^MR||{family}^芳||19800506|F\r"
    )


def _pipelined(listener: MLLPListener, messages: list[str]) -> list[str]:
    """Send every message in one write on one connection (no waiting), then read all the ACKs."""

    async def main() -> list[str]:
        await listener.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
            writer.write(b"".join(frame(m) for m in messages))
            await writer.drain()
            acks = []
            for _ in messages:
                data = await asyncio.wait_for(reader.readuntil(END), 60)
                acks.append(data[data.find(b"\x0b") + 1 : -2].decode())
            writer.close()
            return acks
        finally:
            await listener.stop()

    return asyncio.run(main())


def test_pipelined_acks_arrive_in_order_and_updates_apply_in_order(sqlite_pipeline: Pipeline) -> None:
    """40 updates of one patient without waiting, cut into batches of 7: ACKs in send order, and
    the last one sent is the one in force (same event time, so only the order of application
    decides)."""
    messages = [adt(n, patient=1, family=f"姓{n:02d}") for n in range(40)]
    listener = MLLPListener(sqlite_pipeline, "127.0.0.1", 0, batch_max=7, batch_wait=0.05)
    acks = _pipelined(listener, messages)
    assert [ack_of(a)["control_id"] for a in acks] == [f"C-{n}" for n in range(40)]
    assert all(ack_of(a)["code"] == "AA" for a in acks)
    assert listener.stats.batches == 6  # ceil(40 / 7): ACKed together, batch by batch
    ((patient, *_rest),) = list(sqlite_pipeline.store.iter_current("Patient"))
    assert patient is not None and patient["name"][0]["family"] == "姓39"


def test_bad_messages_in_a_batch_get_ae_and_ar_the_others_aa(pipeline: Pipeline) -> None:
    """One batch (SQLite and PostgreSQL): the two bad messages are quarantined, the rest stored."""
    good = [adt(n) for n in range(10)]
    bad_date = adt(100).replace("19800506", "19801350")  # month 13: content error, quarantined
    unsupported = "MSH|^~\\&|HIS|H001|R|R|20261101||SIU^S12|C-101|P|2.5\rPID|1||M1^^^H001^MR\r"
    messages = [*good[:4], bad_date, *good[4:8], unsupported, *good[8:]]
    listener = MLLPListener(pipeline, "127.0.0.1", 0, batch_wait=0.05)
    acks = _pipelined(listener, messages)
    assert listener.stats.batches == 1
    parsed = [ack_of(a) for a in acks]
    assert [p["control_id"] for p in parsed] == [m.split("|")[9] for m in messages]
    codes = {p["control_id"]: p["code"] for p in parsed}
    assert codes.pop("C-100") == "AE" and codes.pop("C-101") == "AR"
    assert set(codes.values()) == {"AA"}
    assert parsed[4]["errors"] and parsed[9]["errors"] and "200^Unsupported message type" in acks[9]
    assert not any(p["errors"] for p in parsed if p["code"] == "AA")
    assert pipeline.store.count("Patient") == 10
    with pipeline.engine.connect() as conn:
        rows = conn.execute(select(ingest_quarantine.c.position, ingest_quarantine.c.reasons)).all()
    assert sorted(r.position.rsplit("/", 1)[1] for r in rows) == ["C-100#1", "C-101#1"]
    assert all(r.reasons and "rule" in r.reasons for r in rows)


def test_connections_share_batches_and_each_gets_its_own_acks(sqlite_pipeline: Pipeline) -> None:
    """8 waiting senders: their messages are batched together, each ACK names its own message."""
    per = {c: [adt(c * 100 + i) for i in range(12)] for c in range(8)}

    async def main(listener: MLLPListener) -> list[list[str]]:
        await listener.start()
        try:
            return await asyncio.gather(*[send_messages("127.0.0.1", listener.port, m) for m in per.values()])
        finally:
            await listener.stop()

    listener = MLLPListener(sqlite_pipeline, "127.0.0.1", 0, batch_wait=0.05)
    results = asyncio.run(main(listener))
    for c, acks in zip(per, results, strict=True):
        assert [ack_of(a)["control_id"] for a in acks] == [f"C-{c * 100 + i}" for i in range(12)]
        assert all(ack_of(a)["code"] == "AA" for a in acks)
    assert sqlite_pipeline.store.count("Patient") == 96
    assert listener.stats.batches < 96 / 2  # most batches carry several connections' messages


def test_split_frames_keeps_an_unfinished_frame_and_drops_noise() -> None:
    frames, rest = split_frames(b"noise" + frame("A") + frame("B") + b"\x0bMSH|partial")
    assert frames == [b"A", b"B"] and rest == b"\x0bMSH|partial"
    assert split_frames(b"no frame here") == ([], b"")


def test_settings_give_the_listener_defaults(monkeypatch: Any, sqlite_pipeline: Pipeline) -> None:
    from rhip.config import get_settings

    monkeypatch.setenv("RHIP_MLLP_PORT", "12575")
    monkeypatch.setenv("RHIP_MLLP_BATCH_MAX", "64")
    monkeypatch.setenv("RHIP_MLLP_BATCH_WAIT_MS", "5")
    get_settings.cache_clear()
    try:
        listener = MLLPListener(sqlite_pipeline)
    finally:
        get_settings.cache_clear()
    assert (listener.port, listener.batch_max, listener.batch_wait) == (12575, 64, 0.005)


def test_frame_arriving_in_pieces_and_oversize_frame(sqlite_pipeline: Pipeline, monkeypatch: Any) -> None:
    """A frame dribbled in 7-byte writes is answered; one growing past MAX_FRAME closes the link."""
    import rhip.ingest.mllp as mllp

    monkeypatch.setattr(mllp, "MAX_FRAME", 4096)

    async def main(listener: MLLPListener) -> tuple[str, bytes]:
        await listener.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
            data = frame(adt(7))
            for i in range(0, len(data), 7):
                writer.write(data[i : i + 7])
                await writer.drain()
                await asyncio.sleep(0)
            ack = await asyncio.wait_for(reader.readuntil(END), 30)
            writer.write(b"\x0bMSH|" + b"x" * 8192)
            await writer.drain()
            rest = await asyncio.wait_for(reader.read(), 30)  # EOF: the listener hung up
            writer.close()
            return ack.decode(), rest
        finally:
            await listener.stop()

    ack, rest = asyncio.run(main(MLLPListener(sqlite_pipeline, "127.0.0.1", 0)))
    assert ack_of(ack[1:-2])["code"] == "AA" and rest == b""


def _loop_and_acks(pipeline: Pipeline) -> tuple[str, list[str]]:
    """The loop class :func:`mllp.run` runs on, and the ACK codes of two messages sent through it."""
    from rhip.ingest import mllp

    async def main() -> tuple[str, list[str]]:
        listener = MLLPListener(pipeline, "127.0.0.1", 0)
        await listener.start()
        try:
            acks = await send_messages("127.0.0.1", listener.port, [adt(n) for n in (71, 72)])
        finally:
            await listener.stop()
        return type(asyncio.get_running_loop()).__module__, [ack_of(a)["code"] for a in acks]

    return mllp.run(main())


def test_listener_runs_on_uvloop_unless_the_setting_says_asyncio(
    monkeypatch: Any, sqlite_pipeline: Pipeline
) -> None:
    from rhip.config import get_settings

    get_settings.cache_clear()
    try:
        module, codes = _loop_and_acks(sqlite_pipeline)
        assert module.startswith("uvloop") and codes == ["AA", "AA"]
        monkeypatch.setenv("RHIP_MLLP_UVLOOP", "false")
        get_settings.cache_clear()
        module, codes = _loop_and_acks(sqlite_pipeline)
        assert module.startswith("asyncio") and codes == ["AA", "AA"]
    finally:
        get_settings.cache_clear()


def test_without_uvloop_the_listener_falls_back_to_asyncio(monkeypatch: Any) -> None:
    """Where uvloop does not import (e.g. Windows) the factory is asyncio's default."""
    import sys

    from rhip.ingest.mllp import loop_factory

    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes ``import uvloop`` raise ImportError
    assert loop_factory() is None


def test_listener_checkpoints_the_sqlite_log_itself_while_it_runs(sqlite_pipeline: Pipeline) -> None:
    """Commits of the listener's batches do not checkpoint (a thread does); stop gives it back."""
    from rhip.store.walcheckpoint import DEFAULT_AUTOCHECKPOINT

    engine = sqlite_pipeline.engine
    listener = MLLPListener(sqlite_pipeline, "127.0.0.1", 0)

    def autocheckpoint() -> int:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one())

    async def main() -> tuple[int, list[str]]:
        await listener.start()
        try:
            acks = await send_messages("127.0.0.1", listener.port, [adt(n) for n in (81, 82, 83)])
            return autocheckpoint(), [ack_of(a)["code"] for a in acks]
        finally:
            await listener.stop()

    during, codes = asyncio.run(main())
    assert codes == ["AA", "AA", "AA"] and during == 0
    assert listener._checkpoints.checkpoints >= 1 and autocheckpoint() == DEFAULT_AUTOCHECKPOINT
    with engine.connect() as conn:
        busy, log, done = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
    assert busy == 0 and log == done
