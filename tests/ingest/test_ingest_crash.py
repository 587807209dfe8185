"""Crash safety for real: kill -9 the ingest process mid-run, restart, nothing lost or duplicated."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from rhip.ingest.chunkwrite import PAUSE_ENV

N_PATIENTS = 3000
N_MESSAGES = 2500
CLI = "from rhip.cli import main; main()"


def _write_inputs(folder: Path) -> None:
    with (folder / "Patient.ndjson").open("wb") as fh:
        for i in range(N_PATIENTS):
            fh.write(
                orjson.dumps(
                    {
                        "resourceType": "Patient",
                        "id": f"crash-{i}",
                        "gender": "female",
                        "birthDate": "1980-01-01",
                        "name": [{"text": f"P{i}"}],
                    }
                )
                + b"\n"
            )
    lines = []
    for i in range(N_MESSAGES):
        lines.append(
            f"MSH|^~\\&|HIS|H1|RHIP|R|20261101100000||ADT^A28^ADT_A05|K{i}|P|2.5\r"
            f"PID|1||HM{i}^^^H1^MR||Li^Ming||19800101|M\r"
        )
    (folder / "messages.hl7").write_text("\n".join(lines), encoding="utf-8")


def _count(db: Path, sql: str) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute(sql).fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def _without_provenance(db: Path) -> set[str]:
    """Stored ingested resources that no Provenance names as its target.

    ConceptMaps are left out: the platform seeds them, no connector ingests them.
    """
    with sqlite3.connect(db) as conn:
        named = {
            t["reference"]
            for (body,) in conn.execute("SELECT body FROM resource WHERE res_type = 'Provenance'")
            for t in orjson.loads(body).get("target", [])
        }
        stored = {
            f"{t}/{i}"
            for t, i in conn.execute(
                "SELECT res_type, res_id FROM resource "
                "WHERE res_type NOT IN ('Provenance', 'ConceptMap') AND deleted = 0"
            )
        }
    return stored - named


def _ingest(
    folder: Path, url: str, producer: bool = False, pause: str | None = None
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "RHIP_DATA_DIR": str(folder.parent / "data")}
    env.pop(PAUSE_ENV, None)
    if pause is not None:
        env[PAUSE_ENV] = pause
    env["RHIP_INGEST_PRODUCER_MIN_BYTES"] = "1" if producer else "0"
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            CLI,
            "ingest",
            str(folder),
            "--facility",
            "H1",
            "--no-link",
            "--database-url",
            url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kill_at", "producer"), [(N_PATIENTS // 3, False), (N_PATIENTS + 1, False), (N_PATIENTS // 3, True)]
)
def test_kill_minus_nine_and_restart(tmp_path: Path, kill_at: int, producer: bool) -> None:
    """``producer``: the NDJSON file is prepared by a second process (killed with its writer's death)."""
    folder = tmp_path / "in"
    folder.mkdir()
    _write_inputs(folder)
    db = tmp_path / "crash.sqlite"
    url = f"sqlite:///{db}"
    proc = _ingest(folder, url, producer)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if _count(db, "SELECT count(*) FROM resource WHERE res_type = 'Patient'") >= kill_at:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "ingest finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _count(db, "SELECT count(*) FROM resource WHERE res_type = 'Patient'")
    assert 0 < before < N_PATIENTS + N_MESSAGES
    _restart_and_check(folder, url, producer)


def _restart_and_check(folder: Path, url: str, producer: bool) -> None:
    """Run the ingest again to completion: nothing lost, duplicated, or without its Provenance."""
    db = Path(url.removeprefix("sqlite:///"))
    restart = time.time()
    rerun = _ingest(folder, url, producer)
    _out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err.decode()[-2000:]
    total = N_PATIENTS + N_MESSAGES
    assert _count(db, "SELECT count(*) FROM resource WHERE res_type = 'Patient'") == total
    # nothing duplicated: every patient has exactly one version
    assert _count(db, "SELECT count(*) FROM resource_version WHERE res_type = 'Patient'") == total
    assert _count(db, "SELECT count(*) FROM resource WHERE res_type = 'Patient' AND version_id > 1") == 0
    # the restarted run accounts for every record: new ones stored, the rest recognised as duplicates
    row = (
        sqlite3.connect(db)
        .execute(
            "SELECT sum(received), sum(stored), sum(duplicates), sum(quarantined) FROM ingest_batch "
            "WHERE started >= ?",
            (restart,),
        )
        .fetchone()
    )
    assert row[0] == total and row[1] + row[2] == total and row[3] == 0
    delivered = _count(db, "SELECT count(*) FROM ingest_delivery")
    assert delivered == N_MESSAGES
    assert _without_provenance(db) == set()


@pytest.mark.slow
@pytest.mark.parametrize(("chunk", "producer"), [(2, False), (2, True), (4, False)])
def test_kill_between_resources_and_provenance(tmp_path: Path, chunk: int, producer: bool) -> None:
    """Regression: a bulk chunk's Provenance committed after its resources; a kill in between left
    them without Provenance for good. Chunk 2 is in the NDJSON file, chunk 4 the first HL7 chunk."""
    folder = tmp_path / "in"
    folder.mkdir()
    _write_inputs(folder)
    db = tmp_path / "crash.sqlite"
    url = f"sqlite:///{db}"
    marker = tmp_path / "paused"
    proc = _ingest(folder, url, producer, pause=f"{chunk}:{marker}")
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not marker.exists():
        time.sleep(0.05)
    assert marker.exists(), "ingest never reached the pause point"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # the paused chunk's resources were written but not committed: only earlier chunks are there
    assert _count(db, "SELECT count(*) FROM resource WHERE res_type = 'Patient'") == (chunk - 1) * 1000
    assert _without_provenance(db) == set()
    _restart_and_check(folder, url, producer)
