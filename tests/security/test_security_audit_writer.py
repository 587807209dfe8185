"""The audit writer thread: bursts land whole and chained, a stop flushes, the thread stays quiet.

Requests hand their events to one writer thread (``AuditWriter``); it must chain every event in
order, write what is still queued when the server stops, and not wake once per event (each wake
takes the GIL from the event loop that serves the requests).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from rhip.security.audit import AuditRecord, AuditWriter, canonical, events_for_patient, verify_chain
from rhip.security.schema import audit_log


def _record(t: int, i: int) -> AuditRecord:
    return AuditRecord(
        actor=f"u{t}",
        role="system",
        action="read",
        outcome="0",
        entities=[f"Patient/p{i % 5}"],
        patients=[f"p{i % 5}"],
        source="127.0.0.1",
        request_id=f"{t}-{i}",
        path=f"/fhir/Patient/p{i % 5}",
    )


def test_a_burst_larger_than_a_batch_is_chained_whole_and_a_stop_flushes_it(db_url: str) -> None:
    """1,200 events from 4 threads (more than two batches of 500), then ``close`` with no flush."""
    engine = sa.create_engine(db_url)
    writer = AuditWriter(engine)
    threads = [
        threading.Thread(target=lambda t=t: [writer.submit(_record(t, i)) for i in range(300)])
        for t in range(4)
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    writer.close()  # what is queued must reach the chain before the thread ends
    report = verify_chain(engine)
    assert report.ok and report.checked == 1200
    with engine.connect() as conn:
        ids = conn.execute(sa.select(audit_log.c.entry).order_by(audit_log.c.seq)).scalars().all()
    assert len(set(ids)) == 1200  # every event once (request ids differ)
    assert events_for_patient(engine, "p3")[0] == 4 * 60
    engine.dispose()


def test_a_later_writer_chains_on_the_head_an_earlier_one_left(db_url: str) -> None:
    """The head is read from the database by every append: a second writer (a restart, another
    process) continues the same chain."""
    engine = sa.create_engine(db_url)
    for run in range(2):
        writer = AuditWriter(engine, batch=7)
        for i in range(20):
            writer.submit(_record(run, i))
        writer.close()
    report = verify_chain(engine)
    assert report.ok and report.checked == 40
    engine.dispose()


def test_entry_text_is_unchanged() -> None:
    """Entries are hashed as canonical JSON: a change of their text would fork the format of the
    chain, so it is pinned byte for byte (empty lists kept, None and False left out)."""
    record = AuditRecord(
        actor="dr-li",
        role="practitioner",
        action="read",
        outcome="0",
        patients=["p2", "p1", "p2"],
        source=None,
        request_id="r1",
        recorded=1763872000.25,
    )
    assert canonical(record.to_entry()) == (
        b'{"action":"read","actor":"dr-li","entities":[],"outcome":"0","patients":["p1","p2"],'
        b'"purpose":"TREAT","recorded":1763872000.25,"request_id":"r1","role":"practitioner"}'
    )
    glass = AuditRecord(actor="a", role="r", action="x", outcome="4", entities=["E"] * 300, break_glass=True)
    entry = glass.to_entry()
    assert entry["break_glass"] is True and len(entry["entities"]) == 200


def _voluntary_switches(native_id: int) -> int:
    with open(f"/proc/self/task/{native_id}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches line")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_the_writer_does_not_wake_for_every_event(tmp_path: Path) -> None:
    """40 events a millisecond apart, all within one linger: the writer sleeps through the linger
    and then writes them as one batch. It used to wait on the queue for each event, waking (and
    taking the GIL from the event loop) 37-110 times while they came in."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'rhip.sqlite'}")
    writer = AuditWriter(engine, linger=1.0)
    writer.submit(_record(0, 0))
    writer.flush()
    native_id = writer._thread.native_id
    assert native_id is not None
    before = _voluntary_switches(native_id)
    for i in range(40):
        writer.submit(_record(1, i))
        time.sleep(0.001)
    woke = _voluntary_switches(native_id) - before  # the linger has not passed: nothing written yet
    writer.close()
    assert verify_chain(engine).checked == 41
    assert woke < 10, f"the writer thread blocked {woke} times while 40 events came in"
    engine.dispose()
