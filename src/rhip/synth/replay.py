"""Replaying generated streams to live endpoints: MQTT (wearables), HTTP POST, MLLP (HL7 v2).

The files are the recording; replay turns them back into the traffic an ingest endpoint receives.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import orjson

from rhip.errors import InvalidRequest

START, END = b"\x0b", b"\x1c\x0d"


def wearable_messages(folder: Path) -> Iterator[bytes]:
    """Every wearable message (one JSON document per line) of a generated region, file by file."""
    files = sorted((folder / "wearable").glob("*.jsonl"))
    if not files:
        raise InvalidRequest(f"{folder / 'wearable'}: no .jsonl files")
    for path in files:
        with path.open("rb") as fh:
            for line in fh:
                if line.strip():
                    yield line.rstrip(b"\n")


def hl7_messages(folder: Path) -> Iterator[bytes]:
    """Every HL7 v2 message of a generated region (segments CR-separated, no trailing LF)."""
    for path in sorted((folder / "hl7v2").glob("*/messages.hl7")):
        data = path.read_bytes()
        for chunk in data.split(b"\r\n"):
            if chunk.startswith(b"MSH|"):
                yield chunk + b"\r"


def replay_mqtt(folder: Path, *, host: str, port: int, topic: str, limit: int | None = None) -> int:
    """Publish wearable messages with QoS 1; the topic template may use ``{device_id}``."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.connect(host, port)
    client.loop_start()
    sent = 0
    try:
        for raw in wearable_messages(folder):
            device = orjson.loads(raw)["device_id"]
            client.publish(topic.format(device_id=device), raw, qos=1).wait_for_publish(10)
            sent += 1
            if limit is not None and sent >= limit:
                break
    finally:
        client.loop_stop()
        client.disconnect()
    return sent


def replay_http(folder: Path, *, url: str, limit: int | None = None, token: str | None = None) -> int:
    """POST each wearable message as application/json; any non-2xx answer stops the replay.

    ``token`` is sent as a bearer token: RHIP's own ``/ingest/device/{facility}`` answers 401
    without one, since authentication is on by default.
    """
    import httpx

    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    sent = 0
    with httpx.Client(timeout=10) as client:
        for raw in wearable_messages(folder):
            resp = client.post(url, content=raw, headers=headers)
            if resp.status_code >= 300:
                hint = (
                    ": the endpoint wants a bearer token; give --token (a system account's "
                    "access_token from POST /auth/token)"
                    if resp.status_code == 401
                    else ""
                )
                raise InvalidRequest(f"{url}: HTTP {resp.status_code} after {sent} messages{hint}")
            sent += 1
            if limit is not None and sent >= limit:
                break
    return sent


def replay_mllp(folder: Path, *, host: str, port: int, limit: int | None = None) -> int:
    """Send HL7 messages framed by MLLP, reading one ACK per message."""
    sent = 0
    with socket.create_connection((host, port), timeout=10) as sock:
        buf = b""
        for msg in hl7_messages(folder):
            sock.sendall(START + msg + END)
            while END not in buf:
                data = sock.recv(65536)
                if not data:
                    raise InvalidRequest(f"{host}:{port}: connection closed after {sent} messages")
                buf += data
            buf = buf.split(END, 1)[1]
            sent += 1
            if limit is not None and sent >= limit:
                break
    return sent
