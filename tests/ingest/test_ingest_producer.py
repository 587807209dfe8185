"""The producer process (two-core bulk NDJSON) stores exactly what one process stores, and stops cleanly."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import text

from rhip.errors import RhipError
from rhip.ingest.mappers import MAPPERS, MapContext, chunks
from rhip.ingest.model import Record, SourceInfo
from rhip.ingest.pipeline import Pipeline, RecordPreparer
from rhip.ingest.producer import (
    Balance,
    PreparedChunk,
    RecordSource,
    _observe,
    compacted,
    from_wire,
    prepare_chunk,
    start_method,
    to_wire,
)
from rhip.ingest.runner import _ndjson_records, ingest_file
from rhip.ingest.validate import ResourceValidator
from rhip.quality.collector import QualityCollector
from rhip.store import Store, fieldcrypt
from rhip.store.index_schema import INDEX_TABLES

DATA = Path(__file__).resolve().parents[1] / "data" / "synthea-bulk-ndjson"
BAD_LINES = [
    b'{"resourceType": "Patient", "id": "broken"',  # not JSON
    b'{"resourceType": "Patient", "id": "bad id!"}',  # not a FHIR id
    b'{"resourceType": "Patient", "id": "g1", "gender": "sometimes"}',  # not a sex code
]


def _producer_from(monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    """Files of ``size`` bytes or more get the producer process from now on in this test (0: none).

    The settings are cached per process and a store fixture has already read them: drop them."""
    from rhip.config import get_settings

    monkeypatch.setenv("RHIP_INGEST_PRODUCER_MIN_BYTES", str(size))
    get_settings.cache_clear()


def _mixed_file(path: Path) -> int:
    """Every Synthea sample line (several types) with bad lines spread through; returns the line count."""
    lines = [
        line for f in sorted(DATA.glob("*.ndjson")) for line in f.read_bytes().splitlines() if line.strip()
    ]
    for i, bad in enumerate(BAD_LINES):
        lines.insert((i + 1) * len(lines) // (len(BAD_LINES) + 1), bad)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return len(lines)


def _snapshot(store: Store) -> dict[str, Any]:
    """What a load leaves behind, minus write times: bodies, index rows, quarantine and quality tallies."""
    crypt = fieldcrypt.of(store.engine)  # bodies compared in clear: SM4 tokens differ in their IVs
    with store.engine.connect() as conn:
        bodies = sorted(
            (t, i, v, orjson.dumps({**crypt.loads(b), "meta": {}}, option=orjson.OPT_SORT_KEYS))
            for t, i, v, b in conn.execute(
                text("SELECT res_type, res_id, version_id, body FROM resource WHERE res_type <> 'Provenance'")
            )
        )
        rows = {
            table.name: sorted(
                map(tuple, conn.execute(text(f"SELECT * FROM {table.name} WHERE res_type <> 'Provenance'"))),
                key=repr,
            )
            for table in INDEX_TABLES
        }
        quarantine = sorted(conn.execute(text("SELECT position, reasons FROM ingest_quarantine")))
        tallies = sorted(
            conn.execute(text("SELECT rule, sum(checked), sum(failed) FROM quality_tally GROUP BY rule"))
        )
        targets = conn.execute(
            text("SELECT count(*) FROM resource WHERE res_type = 'Provenance'")
        ).scalar_one()
    return {
        "bodies": bodies,
        "rows": rows,
        "quarantine": quarantine,
        "quality": tallies,
        "provenance": targets,
    }


def _load(url: str, path: Path, *, producer: bool) -> tuple[Any, dict[str, Any]]:
    store = Store(url)
    try:
        pipe = Pipeline(store, observers=[QualityCollector(store.engine)], chunk_size=97, producer=producer)
        records = RecordSource(_ndjson_records, (path,))
        rep = pipe.run(
            SourceInfo("SYN", "fhir-ndjson", str(path)), records, track=False, per_record_provenance=False
        )
        return rep, _snapshot(store)
    finally:
        store.close()


@contextlib.contextmanager
def _other_thread() -> Iterator[None]:
    """A second thread running in this process while the block runs (the producer is then spawned)."""
    done = threading.Event()
    thread = threading.Thread(target=done.wait, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def test_a_writer_forks_its_producer_only_while_it_runs_one_thread() -> None:
    """A fresh process (one thread) forks on Linux; with a second thread alive it spawns."""
    code = "from rhip.ingest.producer import start_method; print(start_method())"
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert fresh.stdout.strip() == ("fork" if sys.platform == "linux" else "spawn")
    with _other_thread():
        assert start_method() == "spawn"


@pytest.mark.parametrize("threaded", [False, True], ids=["forked", "spawned"])
def test_producer_stores_what_one_process_stores(
    db_url: str, tmp_path: Path, threaded: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same counts, bodies, index rows, quarantine reasons and quality tallies with or without a
    producer, whether it was forked or spawned. The forked case is forced: threads that earlier
    tests of this worker left idling (a web client's pool) would otherwise make it spawn."""
    from rhip.ingest import producer as producer_module

    path = tmp_path / "mixed.ndjson"
    total = _mixed_file(path)
    one_rep, one = _load(f"sqlite:///{tmp_path / 'one.sqlite'}", path, producer=False)
    if not threaded and sys.platform == "linux":
        monkeypatch.setattr(producer_module, "start_method", lambda: "fork")
    with _other_thread() if threaded else contextlib.nullcontext():
        if threaded:
            assert start_method() == "spawn"
        two_rep, two = _load(db_url, path, producer=True)
    counts = (total, total - len(BAD_LINES), len(BAD_LINES), 0)
    assert (one_rep.received, one_rep.stored, one_rep.quarantined, one_rep.duplicates) == counts
    assert (two_rep.received, two_rep.stored, two_rep.quarantined, two_rep.duplicates) == counts
    assert two["bodies"] == one["bodies"]
    assert sum(len(r) for r in two["rows"].values()) > 5 * total
    if db_url.startswith("sqlite"):  # PostgreSQL returns booleans and floats in its own types
        assert two["rows"] == one["rows"]
    else:
        assert {k: len(v) for k, v in two["rows"].items()} == {k: len(v) for k, v in one["rows"].items()}
    assert two["quarantine"] == one["quarantine"] and len(one["quarantine"]) == len(BAD_LINES)
    assert two["quality"] == one["quality"]
    assert two["provenance"] == one["provenance"] > 0


def test_ingest_file_uses_the_producer_from_the_configured_size(
    sqlite_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Re-delivering a file through the producer is recognised as unchanged, like in one process."""
    path = tmp_path / "mixed.ndjson"
    total = _mixed_file(path)
    pipe = Pipeline(sqlite_store, observers=[QualityCollector(sqlite_store.engine)])
    _producer_from(monkeypatch, 1)
    first = ingest_file(pipe, path, "SYN")
    first_stats = pipe.producer_stats
    _producer_from(monkeypatch, 0)
    second = ingest_file(pipe, path, "SYN")
    assert first_stats is not None and pipe.producer_stats is first_stats  # the second ran in-process
    assert (first.stored, first.quarantined) == (total - len(BAD_LINES), len(BAD_LINES))
    # the bad lines have their quarantine entries already: duplicates, like the stored lines
    assert (second.stored, second.duplicates, second.quarantined) == (0, total, 0)


def _tallies(store: Store) -> list[tuple[Any, ...]]:
    """Every quality tally row: facility, day, rule, checked, failed."""
    sql = "SELECT facility, day, rule, checked, failed FROM quality_tally ORDER BY facility, day, rule"
    with store.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text(sql))]


@pytest.mark.parametrize("producer", [True, False], ids=["producer", "one-process"])
def test_a_redelivered_file_leaves_the_quality_tallies_as_they_were(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, producer: bool
) -> None:
    """The same file delivered twice: the second delivery counts every line as a duplicate and
    adds nothing to the quality tallies, whether its rules ran in a producer process or not."""
    path = tmp_path / "mixed.ndjson"
    total = _mixed_file(path)
    _producer_from(monkeypatch, 1 if producer else 0)
    pipe = Pipeline(store, observers=[QualityCollector(store.engine)], chunk_size=97)
    first = ingest_file(pipe, path, "SYN")
    assert (pipe.producer_stats is not None) == producer
    after_first = _tallies(store)
    assert sum(row[3] for row in after_first) > total
    again = ingest_file(pipe, path, "SYN")
    assert (pipe.producer_stats is not None) == producer
    assert (first.stored, first.quarantined) == (total - len(BAD_LINES), len(BAD_LINES))
    assert (again.received, again.stored, again.quarantined, again.duplicates) == (total, 0, 0, total)
    assert _tallies(store) == after_first


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_whoever_encodes_a_record_the_store_gets_the_same(tmp_path: Path, share: float) -> None:
    """Chunks prepared as the producer prepares them (every record encoded and compact, the
    index rows of a share of them left to the writer, which computes them from the bytes) and
    written by the pipeline leave what one process leaves, whatever that share."""
    path = tmp_path / "mixed.ndjson"
    total = _mixed_file(path)
    _, one = _load(f"sqlite:///{tmp_path / 'one.sqlite'}", path, producer=False)
    store = Store(f"sqlite:///{tmp_path / 'two.sqlite'}")
    try:
        pipe = Pipeline(store, observers=[QualityCollector(store.engine)], chunk_size=97)
        source = SourceInfo("SYN", "fhir-ndjson", str(path))
        ctx = MapContext(source, pipe.tz, pipe.translator)
        records = RecordSource(_ndjson_records, (path,))
        job = pipe._producer_job(ctx, records, MAPPERS[source.connector], list(pipe.observers))
        assert job is not None and job.compact and job.encrypts and job.field_keys
        preparer = RecordPreparer(job.translator, job.tz, job.validator)
        report, compact, with_rows = pipe.open_batch(source), 0, 0
        for chunk in chunks(records, 97):
            ready = _observe(job, prepare_chunk(job, preparer, chunk, share))
            ready = from_wire(to_wire(ready, True, job.whole_types))
            compact += sum(1 for p in ready.records if p.mapped is not None and not p.record.raw)
            with_rows += sum(1 for p in ready.records if p.ready and p.ready[0].rows is not None)
            for obs, part in zip(pipe.observers, ready.observed or (), strict=True):
                obs.merge(part)
            pipe.process_chunk(
                report,
                ctx,
                [p.record for p in ready.records],
                MAPPERS[source.connector],
                track=False,
                per_record_provenance=False,
                prepared=ready.records,
                observed_by=pipe.observers,
            )
        pipe.close_batch(report)
        assert (report.received, report.stored, report.quarantined) == (
            total,
            total - len(BAD_LINES),
            len(BAD_LINES),
        )
        assert compact == total - len(BAD_LINES)
        assert with_rows == (0 if share == 0 else pytest.approx(share * total, abs=60))
        assert _snapshot(store) == one
    finally:
        store.close()


def test_the_wire_form_gives_the_compacted_records(tmp_path: Path) -> None:
    """What the writer decodes equals the compacted records, whether they crossed as marshalled
    tuples or, with a value marshal cannot carry, pickled."""
    path = tmp_path / "mixed.ndjson"
    _mixed_file(path)
    store = Store(f"sqlite:///{tmp_path / 'wire.sqlite'}")
    try:
        pipe = Pipeline(store, observers=[QualityCollector(store.engine)], chunk_size=97)
        source = SourceInfo("SYN", "fhir-ndjson", str(path))
        records = RecordSource(_ndjson_records, (path,))
        job = pipe._producer_job(
            MapContext(source, pipe.tz, pipe.translator), records, MAPPERS[source.connector], []
        )
        assert job is not None
        preparer = RecordPreparer(job.translator, job.tz, job.validator)
        chunk = _observe(job, prepare_chunk(job, preparer, next(chunks(records, 400)), 0.7))
    finally:
        store.close()
    expected = [compacted(p) for p in chunk.records]
    assert sum(1 for p in expected if p.mapped is not None and not p.record.raw) > 200
    assert from_wire(to_wire(chunk, True)) == PreparedChunk(expected, chunk.observed)
    assert from_wire(to_wire(chunk, False)) == chunk  # not compact: every record as it is
    chunk.records[5].record.context["amount"] = Decimal("1.5")  # marshal refuses: all pickled
    assert from_wire(to_wire(chunk, True)) == PreparedChunk(
        [compacted(p) for p in chunk.records], chunk.observed
    )


def test_the_encoded_share_moves_towards_the_idle_side() -> None:
    balance = Balance(share=0.5, step=0.1)
    balance.update(writer_starved=True, producer_blocked=False)
    assert balance.share == pytest.approx(0.4)
    balance.update(writer_starved=False, producer_blocked=True)
    balance.update(writer_starved=False, producer_blocked=True)
    assert balance.share == pytest.approx(0.6)
    balance.update(writer_starved=False, producer_blocked=False)  # neither waited: keep
    assert balance.share == pytest.approx(0.6)
    for _ in range(20):
        balance.update(writer_starved=True, producer_blocked=False)
    assert balance.share == 0.0
    for _ in range(20):
        balance.update(writer_starved=False, producer_blocked=True)
    assert balance.share == 1.0


def _failing_records(path: Path, after: int) -> Iterator[Record]:
    """Records of ``path`` until ``after`` of them, then a read error (a file cut short)."""
    for n, rec in enumerate(_ndjson_records(path)):
        if n == after:
            raise OSError("device went away")
        yield rec


def test_a_producer_failure_stops_the_run_and_keeps_what_was_written(tmp_path: Path) -> None:
    path = tmp_path / "Condition.ndjson"
    path.write_bytes((DATA / "Condition.000.ndjson").read_bytes())
    store = Store(f"sqlite:///{tmp_path / 'f.sqlite'}")
    try:
        pipe = Pipeline(store, chunk_size=10, producer=True, validator=ResourceValidator(use_platform=False))
        with pytest.raises(RhipError, match="producer failed: OSError: device went away"):
            pipe.run(
                SourceInfo("SYN", "fhir-ndjson", str(path)),
                RecordSource(_failing_records, (path, 25)),
                track=False,
                per_record_provenance=False,
            )
        assert store.count("Condition") == 20  # the two whole chunks before the failure
    finally:
        store.close()


_ORPHAN = """
import sys, time
from pathlib import Path
from rhip.ingest.model import SourceInfo
from rhip.ingest.canonical import ConceptTranslator
from rhip.ingest.producer import Producer, ProducerJob, RecordSource
from rhip.ingest.runner import _ndjson_records
from rhip.ingest.validate import ResourceValidator

if __name__ == "__main__":
    path, chunk = Path(sys.argv[1]), int(sys.argv[2])
    job = ProducerJob(SourceInfo("F", "fhir-ndjson", str(path)), RecordSource(_ndjson_records, (path,)),
                      "fhir-ndjson", None, "UTC", ConceptTranslator(), ResourceValidator(), {}, chunk, True)
    with Producer(job) as producer:
        print(producer.pid, flush=True)
        time.sleep(600)  # never reads: the producer fills the queue and waits, or queues all and ends
"""


@pytest.mark.parametrize("chunk", [5, 100_000])
def test_the_producer_exits_when_its_writer_is_killed(tmp_path: Path, chunk: int) -> None:
    """kill -9 of the writing process must not leave the producer running: neither one waiting
    for room in the queue (small chunks) nor one that queued the whole file (one big chunk) and
    waits for its last bytes to be read."""
    path = tmp_path / "Patient.ndjson"
    path.write_bytes((DATA / "Patient.000.ndjson").read_bytes())
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(_ORPHAN))
    writer = subprocess.Popen([sys.executable, str(script), str(path), str(chunk)], stdout=subprocess.PIPE)
    try:
        assert writer.stdout is not None
        child = int(writer.stdout.readline())
        assert Path(f"/proc/{child}").exists()
        time.sleep(3.0 if chunk > 5 else 1.0)  # the big chunk: prepared and queued by now
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        deadline = time.time() + 15
        while time.time() < deadline and _running(child):
            time.sleep(0.1)
        assert not _running(child), "producer outlived its writer"
    finally:
        if writer.poll() is None:
            writer.kill()


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_producer_is_used_for_big_files_on_two_cores_only(
    sqlite_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file at or over the threshold (64 MiB by default) gets the producer process, on a host
    with a second core only."""
    from rhip.config import Settings

    assert Settings().ingest_producer_min_bytes == 64 * 1024 * 1024
    path = tmp_path / "mixed.ndjson"
    _mixed_file(path)
    _producer_from(monkeypatch, path.stat().st_size)
    single = Store(f"sqlite:///{tmp_path / 'single.sqlite'}")
    try:
        on_one_core = Pipeline(single)
        with monkeypatch.context() as one_core:
            one_core.setattr(os, "cpu_count", lambda: 1)
            assert ingest_file(on_one_core, path, "SYN").stored > 0
        assert on_one_core.producer_stats is None
    finally:
        single.close()
    on_two_cores = Pipeline(sqlite_store)
    assert ingest_file(on_two_cores, path, "SYN").stored > 0
    assert on_two_cores.producer_stats is not None
