"""``rhip generate`` end to end, and replay of the streams to a real MQTT broker and MLLP socket."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rhip.synth import Manifest
from rhip.synth.replay import hl7_messages, replay_http, replay_mllp, replay_mqtt

pytestmark = pytest.mark.xdist_group("synth")
RHIP = str(Path(sys.executable).parent / "rhip")


@contextmanager
def http_receiver(answer: Callable[[BaseHTTPRequestHandler, bytes], int]) -> Iterator[str]:
    """A real HTTP server on a free port; ``answer`` sees each POST and gives its status code."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(answer(self, self.rfile.read(int(self.headers["Content-Length"]))))
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_cli_generate_writes_manifest_and_truth(tmp_path: Path) -> None:
    out = tmp_path / "region"
    proc = subprocess.run(
        [
            RHIP,
            "generate",
            "--out",
            str(out),
            "--residents",
            "60",
            "--years",
            "1",
            "--seed",
            "5",
            "--formats",
            "fhir,csv",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["residents"] == 60 and manifest["formats"] == ["fhir", "csv"]
    assert (out / "truth/patient_links.csv").exists()
    assert not (out / "hl7v2").exists()


def test_cli_rejects_unknown_format(tmp_path: Path) -> None:
    proc = subprocess.run(
        [RHIP, "generate", "--out", str(tmp_path), "--residents", "5", "--formats", "telex"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert "unknown format" in proc.stderr


@pytest.mark.mqtt
def test_replay_wearables_to_mqtt_broker(synth_region: tuple[Path, Manifest]) -> None:
    import paho.mqtt.client as mqtt

    out, _ = synth_region
    prefix = f"rhip-test/{uuid.uuid4().hex[:8]}"
    received: list[bytes] = []
    done = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        received.append(msg.payload)
        if len(received) >= 25:
            done.set()

    sub.on_message = on_message
    try:
        sub.connect("127.0.0.1", 1883)
    except OSError:
        pytest.skip("MQTT broker not reachable")
    sub.subscribe(f"{prefix}/#", qos=1)
    sub.loop_start()
    try:
        import time

        time.sleep(0.3)
        sent = replay_mqtt(out, host="127.0.0.1", port=1883, topic=prefix + "/{device_id}", limit=25)
        assert sent == 25
        assert done.wait(10)
    finally:
        sub.loop_stop()
        sub.disconnect()
    first = json.loads(received[0])
    assert first["device_id"] and first["measurements"]


def test_replay_hl7_over_mllp(synth_region: tuple[Path, Manifest]) -> None:
    out, _ = synth_region
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    got: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        buf = b""
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
                while b"\x1c\x0d" in buf:
                    frame, buf = buf.split(b"\x1c\x0d", 1)
                    msg = frame.lstrip(b"\x0b")
                    got.append(msg)
                    control = msg.split(b"\r", 1)[0].split(b"|")[9]
                    conn.sendall(
                        b"\x0bMSH|^~\\&|RHIP|RHIP|||20260101||ACK|1|P|2.5\rMSA|AA|" + control + b"\r\x1c\x0d"
                    )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        sent = replay_mllp(out, host="127.0.0.1", port=port, limit=30)
    finally:
        server.close()
    thread.join(5)
    assert sent == 30
    expected = [m for _, m in zip(range(30), hl7_messages(out), strict=False)]
    assert got == expected


def test_replay_wearables_over_http(synth_region: tuple[Path, Manifest]) -> None:
    out, _ = synth_region
    bodies: list[bytes] = []

    def keep(_: BaseHTTPRequestHandler, body: bytes) -> int:
        bodies.append(body)
        return 202

    with http_receiver(keep) as base:
        sent = replay_http(out, url=f"{base}/device-data", limit=12)
    assert sent == 12 and len(bodies) == 12
    assert all(json.loads(b)["measurements"] for b in bodies)


def test_replay_over_http_sends_the_bearer_token(synth_region: tuple[Path, Manifest]) -> None:
    """`rhip replay http` had no way to authenticate, so RHIP's own endpoint answered 401 and the
    error said only 'HTTP 401 after 0 messages'."""
    from typer.testing import CliRunner

    from rhip.cli import app

    out, _ = synth_region
    seen: list[str | None] = []

    def check(request: BaseHTTPRequestHandler, _: bytes) -> int:
        seen.append(request.headers.get("Authorization"))
        return 202 if request.headers.get("Authorization") == "Bearer t0k" else 401

    with http_receiver(check) as base:
        url = f"{base}/ingest/device/wearable"
        refused = CliRunner().invoke(app, ["replay", "http", str(out), "--url", url, "--limit", "2"])
        sent = CliRunner().invoke(
            app, ["replay", "http", str(out), "--url", url, "--limit", "2", "--token", "t0k"]
        )
    assert "HTTP 401 after 0 messages" in str(refused.exception)  # `rhip` prints it as one error line
    assert "give --token" in str(refused.exception)
    assert sent.exit_code == 0 and "posted 2 messages" in sent.output
    assert seen == [None, "Bearer t0k", "Bearer t0k"]
