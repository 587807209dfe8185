"""The MLLP prepare process over real TCP: the same ACKs and the same store as mapping in the
listener, batches overlapping across connections, mapping in the listener when the process dies,
and no process left behind by a kill -9 of the listener."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from test_ingest_mllp import GOOD, ORU
from test_ingest_mllp_crash import _listen
from test_ingest_producer import _running, _snapshot

from rhip.config import get_settings
from rhip.ingest.mllp import MLLPListener, ack_of, send_messages
from rhip.ingest.pipeline import Pipeline
from rhip.quality.collector import QualityCollector
from rhip.store import Store
from rhip_testkit import free_port

SAMPLES = sorted((Path(__file__).resolve().parents[1] / "data" / "hl7v2" / "messages").glob("*.hl7"))
CONNECTIONS = 24
PEER = re.compile(r"127\.0\.0\.1:\d+/")
PER_CONNECTION = 4


def _one_by_one() -> list[str | bytes]:
    """Every sample file as one frame, bad messages of each kind, then three messages re-sent."""
    bad: list[str | bytes] = [
        ORU.format(n=1, value="not-a-number"),  # content error: AE
        GOOD.format(n=2).replace("19900307", "19901350"),  # month 13: AE
        "MSH|^~\\&|X|H001|Y|Z|20261101||SIU^S12|S-1|P|2.5\rPID|1||M1^^^H001^MR||A^B\r",  # AR
        "PID|1||M1^^^H001^MR||A^B\r",  # no header: AR
        b"MSH|^~\\&|HIS|H001|R|R|20261101||ADT^A04|E-1|P|2.5\rPID|1||\xff\xfe\r",  # not UTF-8 / GB18030
    ]
    samples: list[str | bytes] = [path.read_bytes() for path in SAMPLES]
    good: list[str | bytes] = [GOOD.format(n=n) for n in range(3)]
    return [*samples, *bad, *good, *good]  # the second three are duplicates by control id


def _spread(connection: int) -> list[str]:
    """One connection's messages: new patients each, so no two connections update one resource."""
    return [GOOD.format(n=1000 + connection * PER_CONNECTION + i) for i in range(PER_CONNECTION)]


async def _exchange(listener: MLLPListener) -> list[list[dict[str, Any]]]:
    """The one-by-one messages on one connection, then many connections at once; parsed ACKs."""
    await listener.start()
    try:
        port = listener.port
        first = await send_messages("127.0.0.1", port, _one_by_one())
        rest = await asyncio.gather(
            *[send_messages("127.0.0.1", port, _spread(c)) for c in range(CONNECTIONS)]
        )
    finally:
        await listener.stop()
    return [[ack_of(a) for a in acks] for acks in (first, *rest)]


def _ingest(url: str, *, process: bool) -> tuple[list[list[dict[str, Any]]], MLLPListener, dict[str, Any]]:
    store = Store(url)
    try:
        pipeline = Pipeline(store, observers=[QualityCollector(store.engine)])
        listener = MLLPListener(pipeline, "127.0.0.1", 0, batch_wait=0.05, prepare_process=process)
        acks = asyncio.run(_exchange(listener))
        snapshot = {**_snapshot(store), "targets": _provenance_targets(store)}
    finally:
        store.close()
    # a record's position (quarantine rows, the _source index) names the sender's port: differs per run
    snapshot["quarantine"] = sorted((_unport(p), r) for p, r in snapshot["quarantine"])
    snapshot["rows"] = {
        table: sorted((tuple(_unport(v) for v in row) for row in rows), key=repr)
        for table, rows in snapshot["rows"].items()
    }
    return acks, listener, snapshot


def _provenance_targets(store: Store) -> dict[str, tuple[list[str], str]]:
    """Each Provenance's targets and source entity: ties every message to the resources it gave."""
    out: dict[str, tuple[list[str], str]] = {}
    for prov, *_rest in store.iter_current("Provenance"):
        entity = prov["entity"][0]["what"]["identifier"]["value"]
        out[prov["id"]] = (sorted(t["reference"] for t in prov["target"]), _unport(entity))
    return out


def _unport(value: Any) -> Any:
    return PEER.sub("127.0.0.1:<port>/", value) if isinstance(value, str) else value


@pytest.mark.slow
def test_prepare_process_acks_and_stores_what_the_listener_alone_does(db_url: str, tmp_path: Path) -> None:
    """Same ACK codes, control ids and ERR segments in the same order; same bodies, index rows,
    quarantine reasons, quality tallies and Provenance count, with and without the process."""
    alone_acks, alone, one = _ingest(f"sqlite:///{tmp_path / 'alone.sqlite'}", process=False)
    acks, listener, two = _ingest(db_url, process=True)
    assert alone.stats.prepared == 0 and listener.stats.prepared > 0
    assert acks == alone_acks
    codes = [a["code"] for a in acks[0]]
    assert codes.count("AE") >= 2 and codes.count("AR") >= 3 and codes[-6:] == ["AA"] * 6
    assert all(a["errors"] for a in acks[0] if a["code"] != "AA")
    for c, connection in enumerate(acks[1:]):  # each connection's ACKs name its own messages, in order
        assert [a["control_id"] for a in connection] == [
            f"CTRL-{1000 + c * PER_CONNECTION + i}" for i in range(PER_CONNECTION)
        ]
    assert two["bodies"] == one["bodies"] and len(one["bodies"]) > 2 * CONNECTIONS * PER_CONNECTION
    if db_url.startswith("sqlite"):  # PostgreSQL returns booleans and floats in its own types
        assert two["rows"] == one["rows"]
    else:
        assert {k: len(v) for k, v in two["rows"].items()} == {k: len(v) for k, v in one["rows"].items()}
    assert two["quarantine"] == one["quarantine"] and len(one["quarantine"]) >= 5
    assert two["quality"] == one["quality"]
    assert two["provenance"] == one["provenance"] > CONNECTIONS * PER_CONNECTION
    assert two["targets"] == one["targets"] and len(one["targets"]) == one["provenance"]


def test_connections_waiting_together_start_the_overlap(sqlite_pipeline: Pipeline) -> None:
    """24 waiting senders: the first batch is split so the next is prepared while one is written;
    every message is stored once and every sender gets its ACKs in order."""

    async def main(listener: MLLPListener) -> list[list[str]]:
        await listener.start()
        try:
            return await asyncio.gather(
                *[send_messages("127.0.0.1", listener.port, _spread(c)) for c in range(CONNECTIONS)]
            )
        finally:
            await listener.stop()

    listener = MLLPListener(sqlite_pipeline, "127.0.0.1", 0, batch_wait=0.2, prepare_process=True)
    results = asyncio.run(main(listener))
    for c, acks in enumerate(results):
        assert [ack_of(a)["control_id"] for a in acks] == [m.split("|")[9] for m in _spread(c)]
        assert all(ack_of(a)["code"] == "AA" for a in acks)
    assert sqlite_pipeline.store.count("Patient") == CONNECTIONS * PER_CONNECTION
    assert listener.stats.prepared >= PER_CONNECTION
    # one transaction per round of sends would be PER_CONNECTION batches: the split adds some
    assert PER_CONNECTION < listener.stats.batches < CONNECTIONS * PER_CONNECTION / 2


def test_a_dead_prepare_process_leaves_mapping_to_the_listener(sqlite_pipeline: Pipeline) -> None:
    """kill -9 of the prepare process: the next batch is mapped in the listener, nothing is lost."""

    async def main(listener: MLLPListener) -> tuple[list[str], list[str], int | None]:
        await listener.start()
        try:
            before = await send_messages("127.0.0.1", listener.port, _spread(0))
            pid = listener.prepare_pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            after = await send_messages("127.0.0.1", listener.port, _spread(1))
            return before, after, listener.prepare_pid
        finally:
            await listener.stop()

    listener = MLLPListener(sqlite_pipeline, "127.0.0.1", 0, prepare_process=True)
    before, after, pid_after = asyncio.run(main(listener))
    assert [ack_of(a)["code"] for a in before + after] == ["AA"] * 2 * PER_CONNECTION
    assert pid_after is None
    assert sqlite_pipeline.store.count("Patient") == 2 * PER_CONNECTION


def test_the_setting_turns_the_prepare_process_on(monkeypatch: Any, sqlite_pipeline: Pipeline) -> None:
    default = MLLPListener(sqlite_pipeline, "127.0.0.1", 0)
    assert default.prepare_process is False
    assert asyncio.run(_exchange_one(default, 0)) == (["AA"] * PER_CONNECTION, False)
    assert default.stats.prepared == 0
    monkeypatch.setenv("RHIP_MLLP_PREPARE_PROCESS", "true")
    get_settings.cache_clear()
    try:
        listener = MLLPListener(sqlite_pipeline, "127.0.0.1", 0)
    finally:
        get_settings.cache_clear()
    assert listener.prepare_process is True
    assert asyncio.run(_exchange_one(listener, 1)) == (["AA"] * PER_CONNECTION, True)
    assert listener.stats.prepared > 0
    assert sqlite_pipeline.store.count("Patient") == 2 * PER_CONNECTION


async def _exchange_one(listener: MLLPListener, connection: int) -> tuple[list[str], bool]:
    """One connection's ACK codes, and whether a prepare process ran."""
    await listener.start()
    try:
        running = listener.prepare_pid is not None
        acks = await send_messages("127.0.0.1", listener.port, _spread(connection))
        return [ack_of(a)["code"] for a in acks], running
    finally:
        await listener.stop()


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


@pytest.mark.slow
def test_the_prepare_process_exits_when_the_listener_is_killed(tmp_path: Path) -> None:
    """kill -9 of `rhip mllp-listen` must not leave its prepare process (or any child) running."""
    listener = _listen(free_port(), f"sqlite:///{tmp_path / 'mllp.sqlite'}", tmp_path / "data", True)
    try:
        children = _children(listener.pid)
        assert any("rhip-mllp-prepare" in _cmdline(c) or "spawn_main" in _cmdline(c) for c in children)
        os.kill(listener.pid, signal.SIGKILL)
        listener.wait()
        deadline = time.time() + 15
        while time.time() < deadline and any(_running(c) for c in children):
            time.sleep(0.1)
        assert not any(_running(c) for c in children), "a child outlived the killed listener"
    finally:
        if listener.poll() is None:
            listener.kill()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.parametrize("prepare_process", [False, True], ids=["listener-maps", "prepare-process"])
def test_a_batch_that_cannot_be_written_is_answered_ae_resend(
    sqlite_pipeline: Pipeline, prepare_process: bool
) -> None:
    """The store fails under the listener (its delivery table is gone): every message gets an AE
    asking for a resend, in order, nothing is stored, and the listener keeps answering."""

    async def main(listener: MLLPListener) -> list[str]:
        await listener.start()
        try:
            with sqlite_pipeline.engine.begin() as conn:
                conn.execute(text("DROP TABLE ingest_delivery"))
            return await send_messages("127.0.0.1", listener.port, _spread(0) + _spread(1))
        finally:
            await listener.stop()

    listener = MLLPListener(sqlite_pipeline, "127.0.0.1", 0, prepare_process=prepare_process)
    acks = [ack_of(a) for a in asyncio.run(main(listener))]
    assert [a["control_id"] for a in acks] == [m.split("|")[9] for m in _spread(0) + _spread(1)]
    assert all(
        a["code"] == "AE" and "internal-error: processing failed; resend" in a["errors"][0] for a in acks
    )
    assert sqlite_pipeline.store.count("Patient") == 0
