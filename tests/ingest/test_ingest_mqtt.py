"""MQTT subscriber against real brokers: the broker keeps its session while it is down, a message is
acknowledged only after its commit (a redelivered one counts as a duplicate), credentials and TLS
on a Mosquitto of the test's own."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from mqtt_broker import SHARED, own_mosquitto, publish, publisher, reading, shared_broker_up
from typer.testing import CliRunner

from rhip.config import get_settings
from rhip.errors import RhipError
from rhip.ingest.device import MqttSubscriber, default_client_id, parse_broker
from rhip.ingest.pipeline import Pipeline
from rhip.ingest.schema import ingest_batch, ingest_delivery, ingest_quarantine

BROKER = f"mqtt://{SHARED[0]}:{SHARED[1]}"


@pytest.fixture
def topic() -> str:
    if not shared_broker_up():
        pytest.skip("MQTT broker not reachable")
    return f"rhip-test/{uuid.uuid4().hex}/WEAR3"


@contextmanager
def subscribed(sub: MqttSubscriber, max_messages: int | None = None) -> Iterator[dict[str, Any]]:
    """``sub`` running in a thread (subscribed when the block starts); stopped after it."""
    stop = threading.Event()
    out: dict[str, Any] = {}

    def consume() -> None:
        try:
            out["report"] = sub.run(stop, max_messages=max_messages)
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    while not sub.subscribed.wait(0.05):
        if "error" in out:
            raise out["error"]
        assert thread.is_alive(), "not subscribed"
    out["thread"] = thread
    try:
        yield out
    finally:
        if max_messages is None:
            stop.set()
        thread.join(60)
        stop.set()
        assert not thread.is_alive(), "the subscriber did not stop"
        if "error" in out:
            raise out["error"]


def _counts(pipeline: Pipeline) -> tuple[int, int]:
    """(Observations, delivery keys) in the store."""
    with pipeline.engine.connect() as conn:
        keys = conn.execute(ingest_delivery.select()).all()
    return pipeline.store.count("Observation"), len(keys)


@pytest.mark.mqtt
def test_readings_published_while_the_subscriber_is_down_come_at_its_restart(
    pipeline: Pipeline, topic: str
) -> None:
    client_id = f"rhip-test-{uuid.uuid4().hex[:12]}"
    first = MqttSubscriber(pipeline, BROKER, topic, batch_wait=0.05, client_id=client_id, session_expiry=120)
    with subscribed(first):
        assert first.session_present is False
    with publisher() as client:
        publish(client, topic, [reading(n) for n in range(25)])
    assert _counts(pipeline) == (0, 0)
    again = MqttSubscriber(pipeline, BROKER, topic, batch_wait=0.05, client_id=client_id, session_expiry=1)
    with subscribed(again, max_messages=25) as out:
        out["thread"].join(60)
    assert again.session_present is True
    assert (out["report"].received, out["report"].stored) == (25, 25)
    assert _counts(pipeline) == (25, 25)


class _DiesBeforeAcknowledging(MqttSubscriber):
    """A subscriber that stops after its batches committed but before their PUBACKs: what a
    crash between the two leaves."""

    def _ack(self, client: Any, batch: list[Any]) -> None:
        return None


@pytest.mark.mqtt
def test_a_message_delivered_again_after_its_commit_is_a_duplicate(pipeline: Pipeline, topic: str) -> None:
    client_id = f"rhip-test-{uuid.uuid4().hex[:12]}"
    crashed = _DiesBeforeAcknowledging(
        pipeline, BROKER, topic, batch_wait=0.05, client_id=client_id, session_expiry=120
    )
    payloads = [reading(n) for n in range(10)] + [b'{"device_id": "W-1"}']  # the last is quarantined
    with subscribed(crashed, max_messages=len(payloads)) as out, publisher() as client:
        publish(client, topic, payloads)
        out["thread"].join(60)
    assert (out["report"].stored, out["report"].quarantined) == (10, 1)
    # not acknowledged: the broker delivers all eleven again to the same client id
    again = MqttSubscriber(pipeline, BROKER, topic, batch_wait=0.05, client_id=client_id, session_expiry=1)
    with subscribed(again, max_messages=len(payloads)) as out:
        out["thread"].join(60)
    rep = out["report"]
    assert (rep.received, rep.stored, rep.quarantined, rep.duplicates) == (11, 0, 0, 11)
    assert rep.reconciled
    assert _counts(pipeline) == (10, 10)  # the quarantined reading has its quarantine entry
    with pipeline.engine.connect() as conn:
        assert len(conn.execute(ingest_quarantine.select()).all()) == 1
    with pipeline.engine.connect() as conn:
        batches = conn.execute(ingest_batch.select()).all()
    assert sum(b.received for b in batches) == 22
    assert sum(b.stored for b in batches) == 10
    # acknowledged this time: a third start gets nothing
    third = MqttSubscriber(pipeline, BROKER, topic, batch_wait=0.05, client_id=client_id, session_expiry=1)
    with subscribed(third) as out:
        out["thread"].join(1)
    assert out["report"].received == 0


def test_broker_urls_and_the_default_client_id() -> None:
    plain = parse_broker("mqtt://broker.example:1884")
    assert (plain.host, plain.port, plain.tls, plain.username) == ("broker.example", 1884, False, None)
    tls = parse_broker("mqtts://gw:p%40ss@broker.example", "ignored", "ignored")
    assert (tls.port, tls.tls, tls.username, tls.password) == (8883, True, "gw", "p@ss")
    assert parse_broker("broker.example", "u", "p").password == "p"  # the settings' credentials
    assert "p%40ss" not in str(tls) and "p@ss" not in repr(tls)
    with pytest.raises(RhipError, match=r"scheme must be mqtt:// or mqtts:// .* not http://") as err:
        parse_broker("http://u:topsecret@broker.example")
    assert "topsecret" not in str(err.value)
    with pytest.raises(RhipError, match="port is not a number"):
        parse_broker("mqtt://broker.example:99999")
    one, two = default_client_id("rhip/devices/#"), default_client_id("rhip/devices/H1")
    assert one == default_client_id("rhip/devices/#") and one != two and one.startswith("rhip-")


@pytest.mark.mqtt
def test_credentials_right_and_wrong_on_a_broker_with_a_password_file(
    pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = f"rhip-test/{uuid.uuid4().hex}/WEAR4"
    with own_mosquitto(tmp_path) as broker:
        url = f"mqtt://127.0.0.1:{broker.port}"
        for user, password in ((broker.username, "wrong-pw"), (None, None)):
            with pytest.raises(RhipError) as err:
                MqttSubscriber(pipeline, url, topic, username=user, password=password).run(threading.Event())
            text = str(err.value)
            assert text.startswith(f"the MQTT broker at {url} refused the connection: ")
            assert "RHIP_MQTT_PASSWORD" in text and "wrong-pw" not in text
        # the right password from the settings (environment)
        monkeypatch.setenv("RHIP_MQTT_USERNAME", broker.username)
        monkeypatch.setenv("RHIP_MQTT_PASSWORD", broker.password)
        get_settings.cache_clear()
        sub = MqttSubscriber(pipeline, url, topic, batch_wait=0.05)
        with subscribed(sub, max_messages=2) as out:
            with publisher(port=broker.port, username=broker.username, password=broker.password) as c:
                publish(c, topic, [reading(1), reading(2)])
            out["thread"].join(60)
        assert out["report"].stored == 2

        # the command names the broker and never prints the password given in the URL
        from rhip.cli import app

        store_url = pipeline.engine.url.render_as_string(hide_password=False)
        args = ["mqtt-subscribe", "--broker", f"mqtt://{broker.username}:wrong-pw@127.0.0.1:{broker.port}"]
        result = CliRunner().invoke(app, [*args, "--topic", topic, "--database-url", store_url])
        assert isinstance(result.exception, RhipError)
        assert result.exception.diagnostics.startswith(
            f"the MQTT broker at mqtt://127.0.0.1:{broker.port} refused the connection: "
        )
        assert "wrong-pw" not in result.output + result.exception.diagnostics


@pytest.mark.mqtt
def test_tls_with_a_private_ca(pipeline: Pipeline, tmp_path: Path) -> None:
    topic = f"rhip-test/{uuid.uuid4().hex}/WEAR5"
    with own_mosquitto(tmp_path) as broker:
        credentials = {"username": broker.username, "password": broker.password}
        url = f"mqtts://localhost:{broker.tls_port}"
        with pytest.raises(RhipError) as err:  # the system's CAs do not know the test's CA
            MqttSubscriber(pipeline, url, topic, **credentials).run(threading.Event())
        prefix = f"TLS with the MQTT broker at {url} failed: its certificate was not accepted ("
        assert str(err.value).startswith(prefix)
        assert "--ca-file" in str(err.value)
        with pytest.raises(RhipError, match="is that port the broker's TLS listener, usually 8883"):
            MqttSubscriber(
                pipeline, f"mqtts://127.0.0.1:{broker.port}", topic, ca_file=broker.ca_file, **credentials
            ).run(threading.Event())
        with pytest.raises(RhipError, match="a CA file is for a TLS broker"):
            MqttSubscriber(pipeline, f"mqtt://127.0.0.1:{broker.port}", topic, ca_file=broker.ca_file)
        sub = MqttSubscriber(pipeline, url, topic, batch_wait=0.05, ca_file=broker.ca_file, **credentials)
        with subscribed(sub, max_messages=3) as out:
            with publisher(port=broker.tls_port, ca_file=broker.ca_file, **credentials) as client:
                publish(client, topic, [reading(n) for n in range(3)])
            out["thread"].join(60)
        assert out["report"].stored == 3
        assert pipeline.store.count("Observation") == 3
