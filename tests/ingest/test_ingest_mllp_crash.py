"""Crash safety over MLLP: kill -9 the listener mid-stream; every ACKed message was committed, and
resending everything after a restart stores each message once."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rhip.ingest.hl7v2 import CONNECTOR
from rhip.ingest.mllp import END, ack_of, frame
from rhip.ingest.model import SourceInfo
from rhip.ingest.provenance import scoped_key, stable_id
from rhip_testkit import free_port

N_SENDERS = 4
PER_SENDER = 300
CLI = "from rhip.cli import main; main()"


def _message(n: int) -> str:
    return (
        f"MSH|^~\\&|HIS|H1|RHIP|R|20261101100000||ADT^A28^ADT_A05|K{n}|P|2.5\r"
        f"PID|1||HM{n}^^^H1^MR||Li^Ming||19800101|M\r"
    )


def _listen(port: int, url: str, data: Path, prepare_process: bool = False) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "RHIP_DATA_DIR": str(data),
        "RHIP_MLLP_PREPARE_PROCESS": "true" if prepare_process else "false",
    }
    args = [sys.executable, "-c", CLI, "mllp-listen", "--port", str(port), "--database-url", url, "--no-link"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode()[-2000:] if proc.stderr else "exited") from None
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("listener did not start")


def _send(port: int, numbers: list[int], acked: list[str], stop_on_error: bool) -> None:
    """One sender: each message waits for its ACK; the ACKed control ids are appended."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        buffer = b""
        for n in numbers:
            try:
                sock.sendall(frame(_message(n)))
                while END not in buffer:
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise ConnectionResetError
                    buffer += chunk
            except OSError:
                if stop_on_error:
                    return
                raise
            data, buffer = buffer.split(END, 1)
            ack = ack_of(data[data.find(b"\x0b") + 1 :].decode())
            assert ack["code"] == "AA", ack
            acked.append(ack["control_id"])


def _senders(port: int, acked: list[str], stop_on_error: bool) -> list[threading.Thread]:
    threads = [
        threading.Thread(
            target=_send,
            args=(port, list(range(s, N_SENDERS * PER_SENDER, N_SENDERS)), acked, stop_on_error),
            daemon=True,
        )
        for s in range(N_SENDERS)
    ]
    for t in threads:
        t.start()
    return threads


def _query(db: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        return conn.execute(sql).fetchall()


@pytest.mark.slow
@pytest.mark.parametrize("prepare_process", [False, True], ids=["listener-maps", "prepare-process"])
def test_kill_minus_nine_mid_stream_then_resend_everything(tmp_path: Path, prepare_process: bool) -> None:
    db = tmp_path / "mllp.sqlite"
    url = f"sqlite:///{db}"
    port = free_port()
    listener = _listen(port, url, tmp_path / "data", prepare_process)
    acked: list[str] = []
    threads = _senders(port, acked, stop_on_error=True)
    deadline = time.time() + 120
    while len(acked) < N_SENDERS * PER_SENDER // 3 and time.time() < deadline:
        time.sleep(0.01)
    os.kill(listener.pid, signal.SIGKILL)
    listener.wait()
    for t in threads:
        t.join(30)
    total = N_SENDERS * PER_SENDER
    assert 0 < len(acked) < total, "the listener was not killed mid-stream"
    # every ACKed message was committed: its delivery record, its Patient and its Provenance
    delivered = {r[0] for r in _query(db, "SELECT key FROM ingest_delivery")}
    source = SourceInfo("H1", CONNECTOR, "mllp")
    assert {scoped_key(source, c) for c in acked} <= delivered
    patients = {r[0] for r in _query(db, "SELECT res_id FROM resource WHERE res_type = 'Patient'")}
    provenances = {r[0] for r in _query(db, "SELECT res_id FROM resource WHERE res_type = 'Provenance'")}
    for control in acked:
        assert stable_id("Patient", "H1", f"HM{control[1:]}") in patients
        assert stable_id("prov", scoped_key(source, control)) in provenances

    listener = _listen(port, url, tmp_path / "data", prepare_process)
    try:
        resent: list[str] = []
        for t in _senders(port, resent, stop_on_error=False):
            t.join(120)
        assert sorted(resent) == sorted(f"K{n}" for n in range(total))
    finally:
        listener.send_signal(signal.SIGINT)
        listener.wait(30)
    assert _query(db, "SELECT count(*) FROM resource WHERE res_type = 'Patient'")[0][0] == total
    assert _query(db, "SELECT count(*) FROM resource_version WHERE res_type = 'Patient'")[0][0] == total
    assert _query(db, "SELECT count(*) FROM ingest_delivery")[0][0] == total
    assert _query(db, "SELECT count(*) FROM resource WHERE res_type = 'Provenance'")[0][0] == total


@pytest.mark.slow
def test_sigterm_mid_stream_stops_cleanly(tmp_path: Path) -> None:
    """SIGTERM (a service manager's stop) is Ctrl-C's orderly stop: exit 0, the counts printed,
    and every ACKed message committed (the batch being written is finished and answered)."""
    db = tmp_path / "mllp.sqlite"
    port = free_port()
    listener = _listen(port, f"sqlite:///{db}", tmp_path / "data")
    acked: list[str] = []
    threads = _senders(port, acked, stop_on_error=True)
    deadline = time.time() + 120
    while len(acked) < N_SENDERS * PER_SENDER // 3 and time.time() < deadline:
        time.sleep(0.01)
    listener.send_signal(signal.SIGTERM)
    out, err = listener.communicate(timeout=60)
    for t in threads:
        t.join(30)
    assert listener.returncode == 0, err.decode()[-2000:]
    assert 0 < len(acked) < N_SENDERS * PER_SENDER, "the listener was not stopped mid-stream"
    counts = out.decode().strip().splitlines()[-1]
    match = re.fullmatch(
        r"received (\d+) stored (\d+) quarantined 0 duplicates 0 stale 0 \(ACKs: AA (\d+) AE 0 AR 0\)", counts
    )
    assert match is not None, counts
    received, stored, aa = (int(g) for g in match.groups())
    patients = _query(db, "SELECT count(*) FROM resource WHERE res_type = 'Patient'")[0][0]
    # what it answered is what it committed: no ACK without its commit, no commit without its ACK
    assert received == stored == aa == patients >= len(acked)
    delivered = {r[0] for r in _query(db, "SELECT key FROM ingest_delivery")}
    source = SourceInfo("H1", CONNECTOR, "mllp")
    assert {scoped_key(source, c) for c in acked} <= delivered
    assert len(delivered) == patients
