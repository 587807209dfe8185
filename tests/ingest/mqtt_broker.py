"""MQTT test helpers: readings, a publisher, and a Mosquitto of a test's own (password file, TLS
with a CA made for the test) on free ports."""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from rhip_testkit import free_port

SHARED = ("127.0.0.1", 1883)
PATIENT = {"system": "urn:oid:2.16.156.10011.1.3", "value": "330402198005061238"}


def reading(n: int, device: str = "W-1") -> bytes:
    """Reading ``n`` of ``device``: its own time, so its own Observation."""
    when = dt.datetime(2026, 11, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=n)
    return orjson.dumps(
        {
            "device_id": device,
            "patient": PATIENT,
            "type": "heart-rate",
            "value": 60 + n % 40,
            "unit": "bpm",
            "time": when.isoformat(),
        }
    )


def shared_broker_up() -> bool:
    try:
        socket.create_connection(SHARED, timeout=2).close()
        return True
    except OSError:
        return False


@contextmanager
def publisher(host: str = SHARED[0], port: int = SHARED[1], **tls: Any) -> Iterator[Any]:
    """A connected paho client (MQTT 3.1.1, as a device gateway), its network loop running."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    if tls.get("username"):
        client.username_pw_set(tls["username"], tls.get("password"))
    if tls.get("ca_file"):
        client.tls_set(ca_certs=str(tls["ca_file"]))
    client.connect(host, port)
    client.loop_start()
    try:
        yield client
    finally:
        client.disconnect()
        client.loop_stop()


def publish(client: Any, topic: str, payloads: Iterable[bytes], per_second: float | None = None) -> int:
    """Publish each payload with QoS 1 and wait for the broker's PUBACK; returns how many."""
    sent = 0
    for payload in payloads:
        client.publish(topic, payload, qos=1).wait_for_publish(10)
        sent += 1
        if per_second:
            time.sleep(1 / per_second)
    return sent


class Publishing(threading.Thread):
    """Publishes readings ``range(n)`` to ``topic`` of the shared broker in the background."""

    def __init__(self, topic: str, n: int, per_second: float) -> None:
        super().__init__(daemon=True)
        self.topic, self.n, self.per_second = topic, n, per_second
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with publisher() as client:
                for n in range(self.n):
                    self.sent += publish(client, self.topic, [reading(n)], self.per_second)
        except BaseException as exc:
            self.error = exc


@dataclass
class OwnBroker:
    """A Mosquitto of the test's own: ``port`` needs a user and password, ``tls_port`` also TLS
    with a certificate (for ``localhost`` and 127.0.0.1) signed by the CA in ``ca_file``."""

    port: int
    tls_port: int
    ca_file: Path
    username: str
    password: str


def _ca_and_server_cert(folder: Path) -> Path:
    """A throwaway CA and a server certificate it signed; returns the CA's PEM file."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def pem_key(key: Any) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("rhip test CA"))
        .issuer_name(name("rhip test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "server.key").write_bytes(pem_key(key))
    return folder / "ca.pem"


@contextmanager
def own_mosquitto(
    folder: Path, username: str = "gateway", password: str = "s3cret-pw"
) -> Iterator[OwnBroker]:
    """Start ``mosquitto`` with a password file (``mosquitto_passwd``) on two free ports, the
    second with TLS; stopped (SIGTERM, by its process id) after."""
    mosquitto, passwd = shutil.which("mosquitto"), shutil.which("mosquitto_passwd")
    if not mosquitto or not passwd:
        import pytest

        pytest.skip("mosquitto and mosquitto_passwd are not installed")
    ca_file = _ca_and_server_cert(folder)
    subprocess.run([passwd, "-b", "-c", str(folder / "passwd"), username, password], check=True)
    port, tls_port = free_port(), free_port()
    (folder / "mosquitto.conf").write_text(
        "user root\n"
        "persistence false\n"
        "allow_anonymous false\n"
        f"password_file {folder / 'passwd'}\n"
        f"listener {port} 127.0.0.1\n"
        f"listener {tls_port} 127.0.0.1\n"
        f"cafile {ca_file}\n"
        f"certfile {folder / 'server.pem'}\n"
        f"keyfile {folder / 'server.key'}\n",
        encoding="utf-8",
    )
    log = (folder / "mosquitto.log").open("wb")
    proc = subprocess.Popen([mosquitto, "-c", str(folder / "mosquitto.conf")], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        for p in (port, tls_port):
            while True:
                try:
                    socket.create_connection(("127.0.0.1", p), timeout=1).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError((folder / "mosquitto.log").read_text()) from None
                    time.sleep(0.05)
        yield OwnBroker(port, tls_port, ca_file, username, password)
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
