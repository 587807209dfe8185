"""``rhip mqtt-subscribe`` as a process on the real broker while readings flow: kill -9 and restart
stores every published reading exactly once; SIGTERM stops it cleanly (exit 0, its counts), and
what it had not committed comes at the next start."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from mqtt_broker import Publishing, shared_broker_up
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

CLI = "from rhip.cli import main; main()"
N = 800
COUNTS = re.compile(r"received (\d+) stored (\d+) quarantined (\d+) duplicates (\d+) stale (\d+)")


class Subscriber:
    """``rhip mqtt-subscribe`` in a child process; its output lines are read by a thread."""

    def __init__(self, url: str, topic: str, client_id: str, data: Path) -> None:
        env = {**os.environ, "RHIP_DATA_DIR": str(data), "RHIP_MQTT_SESSION_EXPIRY": "300"}
        args = ["mqtt-subscribe", "--topic", topic, "--client-id", client_id, "--database-url", url]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CLI, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        line = self._line_with("subscribed to", 60)
        self.resumed = "its session resumed" in line

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)

    def _line_with(self, needle: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            if needle in line:
                return line
        self.proc.kill()
        raise AssertionError(f"no '{needle}' line; output:\n{''.join(self.output)[-3000:]}")

    def terminate(self) -> tuple[int, ...]:
        """SIGTERM; the exit code must be 0; returns the printed counts."""
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(60) == 0, "".join(self.output)[-3000:]
        match = COUNTS.search(self._line_with("received", 10))
        assert match is not None
        return tuple(int(g) for g in match.groups())


def _observations(url: str) -> int:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text("SELECT count(*) FROM resource WHERE res_type = 'Observation'")
                ).scalar_one()
            )
    except Exception:  # the schema is not there yet
        return 0
    finally:
        engine.dispose()


def _totals(url: str) -> dict[str, int]:
    queries = {
        "observations": "SELECT count(*) FROM resource WHERE res_type = 'Observation'",
        "versions": "SELECT count(*) FROM resource_version WHERE res_type = 'Observation'",
        "deliveries": "SELECT count(*) FROM ingest_delivery",
        "received": "SELECT coalesce(sum(received), 0) FROM ingest_batch",
        "stored": "SELECT coalesce(sum(stored), 0) FROM ingest_batch",
        "duplicates": "SELECT coalesce(sum(duplicates), 0) FROM ingest_batch",
        "other": "SELECT coalesce(sum(quarantined + stale), 0) FROM ingest_batch",
    }
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return {name: int(conn.execute(text(sql)).scalar_one()) for name, sql in queries.items()}
    finally:
        engine.dispose()


def _wait_for(url: str, at_least: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while (count := _observations(url)) < at_least and time.monotonic() < deadline:
        time.sleep(0.05)
    return count


@pytest.fixture
def topic() -> str:
    if not shared_broker_up():
        pytest.skip("MQTT broker not reachable")
    return f"rhip-test/{uuid.uuid4().hex}/WEAR6"


@pytest.mark.mqtt
@pytest.mark.slow
def test_kill_minus_nine_while_readings_flow_then_restart(db_url: str, topic: str, tmp_path: Path) -> None:
    client_id = f"rhip-test-{uuid.uuid4().hex[:12]}"
    sub = Subscriber(db_url, topic, client_id, tmp_path / "data")
    publishing = Publishing(topic, N, per_second=400)
    publishing.start()
    killed_at = _wait_for(db_url, N // 4)
    os.kill(sub.proc.pid, signal.SIGKILL)
    sub.proc.wait()
    stored_before = _observations(db_url)
    assert N // 4 <= stored_before < N, "the subscriber was not killed while readings flowed"
    time.sleep(0.5)  # readings go on being published while it is down
    again = Subscriber(db_url, topic, client_id, tmp_path / "data")
    assert again.resumed
    publishing.join(60)
    assert publishing.error is None and publishing.sent == N
    assert _wait_for(db_url, N) == N, (
        f"killed at {killed_at} stored; after the restart: {_observations(db_url)}"
    )
    received, stored, quarantined, duplicates, stale = again.terminate()
    assert (stored, quarantined, stale) == (N - stored_before, 0, 0)
    assert received == stored + duplicates
    totals = _totals(db_url)
    # every published reading stored exactly once, and the batches' counts reconcile
    assert totals["observations"] == totals["versions"] == totals["deliveries"] == totals["stored"] == N
    assert totals["received"] == totals["stored"] + totals["duplicates"] and totals["other"] == 0


@pytest.mark.mqtt
@pytest.mark.slow
def test_sigterm_stops_cleanly_and_the_rest_comes_at_the_next_start(topic: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mqtt.sqlite'}"
    client_id = f"rhip-test-{uuid.uuid4().hex[:12]}"
    sub = Subscriber(url, topic, client_id, tmp_path / "data")
    publishing = Publishing(topic, N, per_second=400)
    publishing.start()
    _wait_for(url, N // 4)
    received, stored, _q, duplicates, _s = sub.terminate()
    # what it says it stored is what the store holds: the batch in hand was committed, no later one
    assert N // 4 <= stored == _observations(url) < N
    assert (received, duplicates) == (stored, 0)
    publishing.join(60)
    assert publishing.error is None and publishing.sent == N
    again = Subscriber(url, topic, client_id, tmp_path / "data")
    assert again.resumed
    assert _wait_for(url, N) == N
    time.sleep(0.3)
    received2, stored2, _q, duplicates2, _s = again.terminate()
    # acknowledged exactly what it committed: nothing lost, nothing delivered twice
    assert (stored + stored2, duplicates2, received2) == (N, 0, stored2)
    assert _totals(url)["observations"] == N
