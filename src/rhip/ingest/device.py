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

import hashlib
import json
import logging
import queue
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import orjson

from rhip.config import get_settings
from rhip.errors import RhipError
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


#: Messages the broker may have in flight to the subscriber unacknowledged (MQTT 5 Receive
#: Maximum): every message of a batch stays unacknowledged until its batch committed, so this
#: bounds a batch. Without it a broker applies its own limit (Mosquitto: 20 per client), which
#: would cap every batch at 20 messages.
RECEIVE_MAXIMUM = 1000
#: Seconds to wait for the broker's CONNACK (and the subscription's SUBACK) when starting.
CONNECT_TIMEOUT = 30.0
_SCHEMES = {"mqtt": (False, 1883), "mqtts": (True, 8883)}
#: CONNACK reason codes that mean the credentials were refused (MQTT 5 and MQTT 3.1.1's 4 and 5).
_AUTH_CODES = {134, 135, 4, 5}


@dataclass(frozen=True)
class BrokerAddress:
    """Where the broker is and how to log in; ``str()`` never shows the password."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_broker(url: str, username: str | None = None, password: str | None = None) -> BrokerAddress:
    """The broker of ``mqtt://[user[:password]@]host[:port]`` (port 1883) or ``mqtts://...``
    (TLS, port 8883); a user or password in the URL wins over ``username`` and ``password``
    (the settings). Raises RhipError naming what is wrong, without the password."""
    text = url if "://" in url else f"mqtt://{url}"
    parsed = urlparse(text)
    shown = _without_password(text)
    scheme = parsed.scheme.lower()
    if scheme not in _SCHEMES:
        raise RhipError(
            f"broker URL '{shown}': the scheme must be mqtt:// or mqtts:// (TLS), not {scheme}://"
        )
    try:
        port = parsed.port
    except ValueError:
        raise RhipError(f"broker URL '{shown}': the port is not a number from 1 to 65535") from None
    if not parsed.hostname:
        raise RhipError(f"broker URL '{shown}' names no host (mqtt://host:1883)")
    tls, default_port = _SCHEMES[scheme]
    return BrokerAddress(
        parsed.hostname,
        port or default_port,
        tls,
        unquote(parsed.username) if parsed.username else username,
        unquote(parsed.password) if parsed.password is not None else password,
    )


def _without_password(url: str) -> str:
    """``url`` with the password of its user part replaced by ``***``."""
    head, sep, rest = url.partition("://")
    userinfo, at, hostpart = rest.partition("@")
    if not at or ":" not in userinfo or "/" in userinfo:
        return url
    return f"{head}{sep}{userinfo.split(':', 1)[0]}:***@{hostpart}"


def default_client_id(topic: str) -> str:
    """``rhip-<host name>-<8 hex digits of the topic's hash>``: the same after every restart of
    one subscriber (so the broker resumes its session), different for another topic or host."""
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0])[:32] or "host"
    return f"rhip-{host}-{hashlib.sha256(topic.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class _Message:
    topic: str
    payload: bytes
    mid: int
    qos: int
    connection: int  # the connection that delivered it: a packet id means nothing on another


class MqttSubscriber:
    """Subscribes to ``topic`` on ``broker_url`` and ingests every message, losing none.

    The facility is the topic level after ``facility_level`` (e.g. ``rhip/devices/<facility>``) or
    ``facility`` when given. Messages are gathered for up to ``batch_wait`` seconds per batch.

    Nothing is lost when the subscriber stops or dies: it connects with MQTT 5 under a stable
    ``client_id`` (default :func:`default_client_id`) without a clean start, so the broker keeps
    its session (the QoS 1 subscription, messages published meanwhile and those delivered but
    not acknowledged) for ``session_expiry`` seconds after a disconnect; and a message is
    acknowledged (PUBACK) only after the batch holding it committed, stored or quarantined. A
    message the broker delivers again (after a crash between commit and acknowledgement) has
    the idempotency keys of its readings already delivered: it counts as duplicates, stored once.
    Credentials: from the URL (``mqtt://user:password@host``), else ``username``/``password``
    (default: settings ``mqtt_username``/``mqtt_password``); ``mqtts://`` is TLS with the
    system's CAs or ``ca_file``.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        broker_url: str,
        topic: str,
        *,
        facility: str | None = None,
        batch_wait: float = 0.2,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        ca_file: Path | None = None,
        session_expiry: int | None = None,
    ) -> None:
        settings = get_settings()
        secret = settings.mqtt_password.get_secret_value() if settings.mqtt_password else None
        self.pipeline = pipeline
        self.broker = parse_broker(broker_url, username or settings.mqtt_username, password or secret)
        if ca_file is not None and not self.broker.tls:
            raise RhipError(f"a CA file is for a TLS broker: write mqtts://, not {self.broker}")
        self.host, self.port = self.broker.host, self.broker.port
        self.topic = topic
        self.facility = facility
        self.batch_wait = batch_wait
        self.client_id = client_id or default_client_id(topic)
        self.ca_file = ca_file
        self.session_expiry = settings.mqtt_session_expiry if session_expiry is None else session_expiry
        self.report = BatchReport("", SourceInfo(facility or "", CONNECTOR, topic))
        self._queue: queue.Queue[_Message] = queue.Queue()
        self.subscribed = threading.Event()
        #: whether the broker resumed a session at the first connection (None: not connected yet)
        self.session_present: bool | None = None
        self._connection = 0  # bumped at every connect and disconnect
        self._lock = threading.Lock()  # between acknowledgements and a change of connection
        self._started = threading.Event()  # first CONNACK (or refusal) and SUBACK
        self._disconnected = threading.Event()
        self._subacked = threading.Event()
        self._failure: str | None = None

    def _facility(self, topic: str) -> str:
        if self.facility:
            return self.facility
        return topic.rstrip("/").rsplit("/", 1)[-1] or "unknown"

    def run(
        self,
        stop: threading.Event,
        max_messages: int | None = None,
        ready: Callable[[], None] | None = None,
    ) -> BatchReport:
        """Consume until ``stop`` is set (or ``max_messages`` were ingested); returns the counts.

        ``ready`` is called once connected and subscribed. A stop lets the batch in hand commit
        and be acknowledged; messages received after it are not acknowledged, and the broker
        delivers them again at the next start.
        """
        client = self._client()
        self._connect(client)
        done = 0
        try:
            if ready is not None:
                ready()
            while not stop.is_set() and (max_messages is None or done < max_messages):
                try:
                    first = self._queue.get(timeout=0.1)
                except queue.Empty:
                    continue
                batch = self._gather(first)
                done += len(batch)
                self._ingest(batch)
                self._ack(client, batch)
        finally:
            self._close(client)
        return self.report

    def _close(self, client: Any) -> None:
        """Disconnect once the broker has every acknowledgement sent.

        A broker handles a client's packets in order, so its SUBACK to a SUBSCRIBE sent after the
        PUBACKs (the same subscription again) says it has them. Without that wait a broker lost
        PUBACKs (seen: Mosquitto 2.0, most of a batch's, about one stop in four; the socket was
        closed with unread messages in it, a reset) and delivered those messages again. paho's
        network thread is then stopped only after it wrote the DISCONNECT (``on_disconnect``):
        stopping it at once can leave queued packets unwritten.
        """
        self._subacked.clear()
        if self._subscribe(client) == 0:  # MQTT_ERR_SUCCESS: connected, SUBSCRIBE queued
            self._subacked.wait(10)
        self._disconnected.clear()
        if client.disconnect() == 0:
            self._disconnected.wait(10)
        client.loop_stop()

    def _subscribe(self, client: Any) -> int:
        """Subscribe to the topic with QoS 1; retained messages only when the subscription is new
        (not at every reconnect of the kept session)."""
        from paho.mqtt.subscribeoptions import SubscribeOptions

        rc, _mid = client.subscribe(self.topic, options=SubscribeOptions(qos=1, retainHandling=1))
        return int(rc)

    def _gather(self, first: _Message) -> list[_Message]:
        """``first`` and what arrives within ``batch_wait``, up to :data:`RECEIVE_MAXIMUM` (the
        broker sends nothing more until some are acknowledged)."""
        batch = [first]
        deadline = time.monotonic() + self.batch_wait
        while len(batch) < RECEIVE_MAXIMUM:
            try:
                batch.append(self._queue.get(timeout=max(deadline - time.monotonic(), 0.001)))
            except queue.Empty:
                break
        return batch

    def _client(self) -> Any:
        import paho.mqtt.client as mqtt

        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if self.broker.username is not None:
            client.username_pw_set(self.broker.username, self.broker.password)
        if self.broker.tls:
            try:
                client.tls_set(ca_certs=str(self.ca_file) if self.ca_file else None)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise RhipError(
                    f"cannot read the CA file {self.ca_file}: {getattr(exc, 'strerror', None) or exc}; "
                    "--ca-file takes the PEM certificate of the CA that signed the broker's"
                ) from None
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _connect(self, client: Any) -> None:
        """Connect and subscribe; RhipError naming the broker when it cannot be reached, the TLS
        handshake fails, the credentials or the subscription are refused."""
        import ssl

        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self.session_expiry
        properties.ReceiveMaximum = RECEIVE_MAXIMUM
        try:
            client.connect(self.host, self.port, clean_start=False, properties=properties)
        except ssl.SSLCertVerificationError as exc:
            raise RhipError(
                f"TLS with the MQTT broker at {self.broker} failed: its certificate was not "
                f"accepted ({exc.verify_message}); give "
                "--ca-file with the certificate of the CA that signed the broker's (PEM), and a "
                "--broker host name the certificate names"
            ) from None
        except ssl.SSLError as exc:
            raise RhipError(
                f"TLS with the MQTT broker at {self.broker} failed: {exc.reason or exc}; is that "
                "port the broker's TLS listener (usually 8883)?"
            ) from None
        except OSError as exc:  # the broker's connect, the one network call made here
            reason = exc.strerror or str(exc)
            tls = " (for mqtts://: is that port the broker's TLS listener, usually 8883?)"
            raise RhipError(
                f"cannot connect to the MQTT broker at {self.host}:{self.port}: {reason}; check "
                f"--broker (mqtt://host:1883) and that the broker runs{tls if self.broker.tls else ''}"
            ) from None
        client.loop_start()
        if not self._started.wait(CONNECT_TIMEOUT):
            self._failure = (
                f"the MQTT broker at {self.broker} did not accept the connection within "
                f"{CONNECT_TIMEOUT:g} s; is it a TLS port (then write mqtts://)?"
            )
        if self._failure is not None:
            client.loop_stop()
            client.disconnect()
            raise RhipError(self._failure)

    # -- callbacks (paho's network thread) ------------------------------------------------------
    def _on_connect(self, client: Any, _userdata: Any, flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            if not self._started.is_set():
                hint = (
                    "; check the user name and password (RHIP_MQTT_USERNAME and RHIP_MQTT_PASSWORD, "
                    "or the --broker URL)"
                    if reason.value in _AUTH_CODES
                    else ""
                )
                self._failure = (
                    f"the MQTT broker at {self.broker} refused the connection: {reason} "
                    f"(CONNACK reason code {reason.value}){hint}"
                )
                self._started.set()
            else:
                log.error("MQTT broker %s refused the connection: %s; retrying", self.broker, reason)
            return
        with self._lock:
            self._connection += 1
        if self.session_present is None:
            self.session_present = bool(flags.session_present)
        elif not flags.session_present:
            log.warning(
                "MQTT broker %s kept no session for client id %s: messages published while it was "
                "disconnected are not delivered",
                self.broker,
                self.client_id,
            )
        self._subscribe(client)

    def _on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        with self._lock:
            self._connection += 1
        self._disconnected.set()
        if not self._started.is_set():
            self._failure = (
                f"the MQTT broker at {self.broker} closed the connection before accepting it: "
                f"{reason}; is it a TLS port (then write mqtts://)?"
            )
            self._started.set()

    def _on_subscribe(self, _client: Any, _userdata: Any, _mid: int, codes: list[Any], _props: Any) -> None:
        if codes and codes[0].is_failure and not self._started.is_set():
            self._failure = (
                f"the MQTT broker at {self.broker} refused the subscription to {self.topic}: {codes[0]}"
            )
        self.subscribed.set()
        self._subacked.set()
        self._started.set()

    def _on_message(self, _client: Any, _userdata: Any, msg: Any) -> None:
        self._queue.put(_Message(msg.topic, bytes(msg.payload), msg.mid, msg.qos, self._connection))

    # -- the batch ------------------------------------------------------------------------------
    def _ack(self, client: Any, batch: list[_Message]) -> None:
        """Acknowledge the committed batch's messages that came over the current connection; the
        broker delivers the others again (stored once: their readings count as duplicates)."""
        with self._lock:
            for msg in batch:
                if msg.qos and msg.connection == self._connection:
                    client.ack(msg.mid, msg.qos)

    def _ingest(self, batch: list[_Message]) -> None:
        by_facility: dict[str, list[Record]] = {}
        for msg in batch:
            by_facility.setdefault(self._facility(msg.topic), []).extend(
                reading_records(msg.payload, msg.topic)
            )
        for facility, records in by_facility.items():
            rep = self.pipeline.run(
                SourceInfo(facility, CONNECTOR, self.topic), records, per_record_provenance=False
            )
            self.report.add(rep)


register_mapper(CONNECTOR, map_reading)
