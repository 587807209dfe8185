"""Device readings (wearables, home monitors) as JSON over HTTP or MQTT -> vital-sign Observations.

A reading is a JSON object::

    {"device_id": "W-0001", "patient": {"system": "<identifier system>", "value": "<id>"},
     "type": "heart-rate", "value": 72, "unit": "bpm", "time": "2026-11-01T08:00:00+08:00"}

``patient`` may instead be ``patient_id`` (a Patient resource id); blood pressure is sent as
``{"type": "blood-pressure", "systolic": 120, "diastolic": 80}``. A payload may hold one reading,
a list, or ``{"readings": [...]}``; each reading is its own record. Observations follow the FHIR
vital-signs profile (category ``vital-signs``, LOINC code, UCUM unit) and get ids derived from the
device, type and time, so a re-sent reading is recognised.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import orjson

from rhip.fhir import systems
from rhip.ingest.canonical import epoch, to_instant
from rhip.ingest.mappers import MapContext, register_mapper
from rhip.ingest.model import BatchReport, Mapped, MappingError, Record, SourceInfo, issue
from rhip.ingest.pipeline import Pipeline
from rhip.ingest.provenance import stable_id

log = logging.getLogger(__name__)

CONNECTOR = "device-json"
DEVICE_SYSTEM = "https://rhip.example.org/fhir/sid/device"
VITAL_SIGNS_PROFILE = "http://hl7.org/fhir/StructureDefinition/vitalsigns"

#: reading type -> (LOINC code, display, UCUM unit)
VITALS: dict[str, tuple[str, str, str]] = {
    "heart-rate": ("8867-4", "Heart rate", "/min"),
    "respiratory-rate": ("9279-1", "Respiratory rate", "/min"),
    "spo2": ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%"),
    "body-temperature": ("8310-5", "Body temperature", "Cel"),
    "body-weight": ("29463-7", "Body weight", "kg"),
    "body-height": ("8302-2", "Body height", "cm"),
    "bmi": ("39156-5", "Body mass index (BMI) [Ratio]", "kg/m2"),
    "systolic": ("8480-6", "Systolic blood pressure", "mm[Hg]"),
    "diastolic": ("8462-4", "Diastolic blood pressure", "mm[Hg]"),
    "blood-glucose": ("15074-8", "Glucose [Moles/volume] in Blood", "mmol/L"),
    "steps": ("55423-8", "Number of steps in unspecified time Pedometer", "{steps}"),
}
_BP = ("85354-9", "Blood pressure panel with all children optional")


_JSON = json.JSONDecoder()
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_JSON_WHITESPACE = b" \t\n\r"


def readings(payload: bytes) -> list[bytes]:
    """Split a payload into one raw JSON document per reading (invalid JSON stays one record).

    Each reading keeps the bytes it was sent as (its text within the payload, without the
    whitespace around it), whether it came alone, in a list or in ``{"readings": [...]}``: its
    quarantine entry and idempotency key (a hash of those bytes) are then the same whichever way
    a gateway sends it, and nothing is re-serialised (a number stays as written).
    """
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return [payload]
    wrapped = isinstance(data, dict) and isinstance(data.get("readings"), list)
    if not (wrapped or isinstance(data, list)):
        return [payload.strip(_JSON_WHITESPACE)]
    text = payload.decode()
    try:
        start = _member_value(text, _skip(text, 0), "readings") if wrapped else _skip(text, 0)
        return [item.encode() for item in _array_items(text, start)]
    except (ValueError, RecursionError):  # nesting deeper than the scanner goes: re-serialise
        return [orjson.dumps(r) for r in (data["readings"] if wrapped else data)]


def _skip(text: str, pos: int) -> int:
    """The position of the first character at or after ``pos`` that is not JSON whitespace."""
    match = _WHITESPACE.match(text, pos)
    return match.end() if match else pos


def _array_items(text: str, pos: int) -> list[str]:
    """The text of each element of the JSON array opening at ``pos`` (valid JSON, checked before)."""
    items: list[str] = []
    pos = _skip(text, pos + 1)
    while text[pos] != "]":
        _, end = _JSON.raw_decode(text, pos)
        items.append(text[pos:end])
        pos = _skip(text, end)
        if text[pos] == ",":
            pos = _skip(text, pos + 1)
    return items


def _member_value(text: str, pos: int, name: str) -> int:
    """Where the value of member ``name`` of the JSON object opening at ``pos`` starts; the last
    one when the name repeats, the one a JSON parser keeps."""
    found = -1
    pos = _skip(text, pos + 1)
    while text[pos] != "}":
        key, end = _JSON.raw_decode(text, pos)
        pos = _skip(text, _skip(text, end) + 1)  # past the colon
        if key == name:
            found = pos
        _, end = _JSON.raw_decode(text, pos)
        pos = _skip(text, end)
        if text[pos] == ",":
            pos = _skip(text, pos + 1)
    return found


def _number(reading: dict[str, Any], key: str, path: str) -> float:
    value = reading.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MappingError("number expected", [issue("data-type", path, "reading value must be a number")])
    return value


def _qty(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": systems.UCUM, "code": unit}


def map_reading(record: Record, ctx: MapContext) -> Mapped:
    """One reading -> one vital-signs Observation."""
    try:
        reading = orjson.loads(record.raw)
    except orjson.JSONDecodeError as exc:
        raise MappingError("not JSON", [issue("json-syntax", "", str(exc)[:160])]) from None
    if not isinstance(reading, dict):
        raise MappingError("reading is not an object", [issue("structure", "", "expected a JSON object")])
    kind = str(reading.get("type", ""))
    device = str(reading.get("device_id", "")).strip()
    when_raw = reading.get("time", reading.get("timestamp"))
    missing = [name for name, ok in (("device_id", device), ("time", isinstance(when_raw, str))) if not ok]
    if missing or not isinstance(when_raw, str):
        # One reason per missing element, each naming its own path: "device_id|time: missing" left
        # the sender guessing which of the two it had forgotten.
        raise MappingError(
            f"{' and '.join(missing)} required",
            [issue("required", name, f"reading has no {name}") for name in missing],
        )
    try:
        when = to_instant(when_raw, ctx.tz)
    except ValueError:
        raise MappingError("bad time", [issue("datetime-format", "time", "not a timestamp")]) from None
    if "patient_id" in reading:
        subject: dict[str, Any] = {"reference": f"Patient/{reading['patient_id']}"}
    elif isinstance(reading.get("patient"), dict) and reading["patient"].get("value"):
        p = reading["patient"]
        subject = {
            "type": "Patient",
            "identifier": {"system": p.get("system", systems.CITIZEN_ID), "value": str(p["value"])},
        }
    else:
        raise MappingError("patient missing", [issue("required", "patient", "reading names no patient")])
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": stable_id("Observation", ctx.source.facility, device, kind, when),
        "meta": {"profile": [VITAL_SIGNS_PROFILE]},
        "status": "final",
        "category": [{"coding": [{"system": systems.OBSERVATION_CATEGORY, "code": "vital-signs"}]}],
        "subject": subject,
        "effectiveDateTime": when,
        "device": {"identifier": {"system": DEVICE_SYSTEM, "value": device}},
    }
    if isinstance(reading.get("measurements"), list):
        return Mapped(
            _measurements(reading["measurements"], obs, ctx, device, when), event_time=epoch(when, ctx.tz)
        )
    if kind == "blood-pressure":
        obs["code"] = {"coding": [{"system": systems.LOINC, "code": _BP[0], "display": _BP[1]}]}
        obs["component"] = [
            {
                "code": {
                    "coding": [{"system": systems.LOINC, "code": VITALS[k][0], "display": VITALS[k][1]}]
                },
                "valueQuantity": _qty(_number(reading, k, k), "mm[Hg]"),
            }
            for k in ("systolic", "diastolic")
        ]
    elif kind in VITALS:
        code, display, unit = VITALS[kind]
        obs["code"] = {"coding": [{"system": systems.LOINC, "code": code, "display": display}]}
        obs["valueQuantity"] = _qty(_number(reading, "value", "value"), unit)
    else:
        raise MappingError(
            "unknown reading type", [issue("value-set", "type", "reading type is not supported")]
        )
    return Mapped([obs], event_time=epoch(when, ctx.tz))


def _measurements(
    items: list[Any], template: dict[str, Any], ctx: MapContext, device: str, when: str
) -> list[dict[str, Any]]:
    """The generator's stream format: one Observation per LOINC-coded measurement."""
    units = {code: unit for code, _d, unit in VITALS.values()}
    out = []
    for n, m in enumerate(items):
        if not isinstance(m, dict) or not m.get("code"):
            raise MappingError(
                "measurement without code", [issue("required", f"measurements[{n}].code", "missing")]
            )
        obs = dict(template)
        code = str(m["code"])
        obs["id"] = stable_id("Observation", ctx.source.facility, device, code, when)
        coding = {"system": m.get("system", systems.LOINC), "code": code}
        if m.get("display"):
            coding["display"] = str(m["display"])
        obs["code"] = {"coding": [coding]}
        unit = str(m.get("unit") or units.get(code, ""))
        value = m.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MappingError(
                "number expected", [issue("data-type", f"measurements[{n}].value", "not a number")]
            )
        obs["valueQuantity"] = _qty(value, unit) if unit else {"value": value}
        out.append(obs)
    return out


def reading_records(payload: bytes, origin: str) -> Iterator[Record]:
    """Records for every reading of a payload (``origin`` names the request or topic)."""
    for n, raw in enumerate(readings(payload), 1):
        yield Record(raw, f"{origin}#{n}")


def ingest_payload(pipeline: Pipeline, payload: bytes, facility: str, origin: str) -> BatchReport:
    """Ingest one HTTP/MQTT payload of readings as one batch."""
    source = SourceInfo(facility, CONNECTOR, origin)
    return pipeline.run(source, reading_records(payload, origin), per_record_provenance=False)


def post_files(pipeline: Pipeline, paths: list[Path], facility: str, per_post: int = 500) -> BatchReport:
    """Send the readings of ``.jsonl`` files to ``POST /ingest/device/{facility}`` over real HTTP.

    The platform's API (authentication on) runs on a free 127.0.0.1 port for the duration, on
    this pipeline (its store and quality observers), and each post of ``per_post`` readings is
    one batch, exactly as a facility's gateway would deliver them. Returns the summed counts.
    """
    import httpx

    total = BatchReport("http", SourceInfo(facility, CONNECTOR, "http"))
    with (
        _device_server(pipeline) as (base, headers),
        httpx.Client(base_url=base, headers=headers, timeout=120) as client,
    ):
        for path in paths:
            for payload in _payloads(path, per_post):
                response = client.post(f"/ingest/device/{facility}", content=payload)
                response.raise_for_status()
                counts = response.json()
                for name in ("received", "stored", "quarantined", "duplicates", "stale"):
                    setattr(total, name, getattr(total, name) + int(counts[name]))
                total.resources_written += int(counts.get("resources", 0))
    return total


def _payloads(path: Path, per_post: int) -> Iterator[bytes]:
    """JSON arrays of up to ``per_post`` readings, one per non-blank line of a ``.jsonl`` file."""
    batch: list[bytes] = []
    with path.open("rb") as fh:
        for line in fh:
            if line.strip():
                batch.append(line.strip())
            if len(batch) == per_post:
                yield b"[" + b",".join(batch) + b"]"
                batch = []
    if batch:
        yield b"[" + b",".join(batch) + b"]"


@contextmanager
def _device_server(pipeline: Pipeline) -> Iterator[tuple[str, dict[str, str]]]:
    """The platform's API (authentication on, ingest router) on a free 127.0.0.1 port.

    Yields its base URL and the headers a device gateway sends: a short-lived bearer token of a
    ``system`` client (what the ``/ingest/`` gate admits), so every post is authenticated and
    audited exactly as a facility's gateway would be. With ``auth_enabled`` off there is no token.
    """
    import socket

    import uvicorn

    from rhip.api.app import create_app

    app = create_app(pipeline.store, router_modules=("rhip.security.api", "rhip.ingest.api"))
    app.state.ingest_pipeline = pipeline
    headers = _gateway_headers(app)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the device HTTP server did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", headers
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _gateway_headers(app: Any) -> dict[str, str]:
    """Authorization of the demo's device gateway: a 10-minute token of a ``system`` client."""
    runtime = getattr(app.state, "security", None)
    if runtime is None:  # auth_enabled off
        return {}
    from rhip.security.tokens import issue_token
    from rhip.security.users import Account

    gateway = Account(username="device-gateway", kind="system", role="system")
    return {
        "Authorization": f"Bearer {issue_token(runtime.keys, gateway, 'system/Observation.write', ttl=600)}"
    }


class MqttSubscriber:
    """Subscribes to ``topic`` on ``broker_url`` (``mqtt://host:port``) and ingests every message.

    The facility is the topic level after ``facility_level`` (e.g. ``rhip/devices/<facility>``) or
    ``facility`` when given. Messages are gathered for up to ``batch_wait`` seconds per batch.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        broker_url: str,
        topic: str,
        *,
        facility: str | None = None,
        batch_wait: float = 0.2,
        client_id: str = "",
    ) -> None:
        self.pipeline = pipeline
        url = urlparse(broker_url if "://" in broker_url else f"mqtt://{broker_url}")
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 1883
        self.topic = topic
        self.facility = facility
        self.batch_wait = batch_wait
        self.client_id = client_id
        self.report = BatchReport("", SourceInfo(facility or "", CONNECTOR, topic))
        self._queue: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.subscribed = threading.Event()

    def _facility(self, topic: str) -> str:
        if self.facility:
            return self.facility
        return topic.rstrip("/").rsplit("/", 1)[-1] or "unknown"

    def run(self, stop: threading.Event, max_messages: int | None = None) -> BatchReport:
        """Consume until ``stop`` is set (or ``max_messages`` were ingested); returns the counts."""
        import paho.mqtt.client as mqtt

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id)
        client.on_connect = lambda c, *_a: c.subscribe(self.topic, qos=1)
        client.on_subscribe = lambda *_a: self.subscribed.set()
        client.on_message = lambda _c, _u, msg: self._queue.put((msg.topic, bytes(msg.payload)))
        client.connect(self.host, self.port)
        client.loop_start()
        done = 0
        try:
            while not stop.is_set() and (max_messages is None or done < max_messages):
                try:
                    first = self._queue.get(timeout=0.1)
                except queue.Empty:
                    continue
                batch = [first]
                deadline = time.monotonic() + self.batch_wait
                while time.monotonic() < deadline:
                    try:
                        batch.append(self._queue.get(timeout=max(deadline - time.monotonic(), 0.001)))
                    except queue.Empty:
                        break
                done += len(batch)
                self._ingest(batch)
        finally:
            client.loop_stop()
            client.disconnect()
        return self.report

    def _ingest(self, batch: list[tuple[str, bytes]]) -> None:
        by_facility: dict[str, list[Record]] = {}
        for topic, payload in batch:
            by_facility.setdefault(self._facility(topic), []).extend(reading_records(payload, topic))
        for facility, records in by_facility.items():
            rep = self.pipeline.run(
                SourceInfo(facility, CONNECTOR, self.topic), records, per_record_provenance=False
            )
            self.report.add(rep)


register_mapper(CONNECTOR, map_reading)
