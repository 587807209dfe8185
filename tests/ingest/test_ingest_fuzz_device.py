"""Fuzz: mutated device readings, in the pipeline, over real HTTP and over a real MQTT broker."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fuzzing import (
    assert_batch_sound,
    assert_stored_valid,
    fuzz_settings,
    mutated_bytes,
    mutated_json,
    shown_on_failure,
)
from hypothesis import given
from hypothesis import strategies as st

from rhip.ingest.device import MqttSubscriber, _device_server, ingest_payload
from rhip.ingest.schema import ingest_batch

SIMPLE = [
    {
        "device_id": "W-1",
        "patient_id": "p1",
        "type": "heart-rate",
        "value": 72,
        "unit": "bpm",
        "time": "2026-11-01T08:00:00+08:00",
    },
    {
        "device_id": "W-1",
        "patient": {"system": "urn:oid:2.16.156.10011.1.19", "value": "3304005126224926"},
        "type": "blood-pressure",
        "systolic": 120,
        "diastolic": 80,
        "time": "2026-11-01 08:00:00",
    },
]


@pytest.fixture(scope="module")
def device_seeds(generated_region: Path) -> list[Any]:
    """Generator stream messages (one per device), the simple format, and payload envelopes."""
    stream = [
        json.loads(p.read_bytes().split(b"\n", 1)[0])
        for p in sorted((generated_region / "wearable").glob("*.jsonl"))
    ]
    readings = stream + SIMPLE
    return [*readings, readings[:2], {"readings": readings[-2:]}]


def _payload(data: st.DataObject, seeds: list[Any]) -> bytes:
    seed = data.draw(st.sampled_from(seeds))
    if data.draw(st.booleans()):
        return data.draw(mutated_json(seed, max_ops=4))
    return data.draw(mutated_bytes(orjson.dumps(seed)))


@fuzz_settings(default=40)
@given(data=st.data())
def test_mutated_device_payloads_are_stored_or_quarantined(
    data: st.DataObject, device_seeds: list[Any], store_factory: Any
) -> None:
    """Wrong types at any path, missing fields, huge numbers, odd unicode, byte damage."""
    payload = _payload(data, device_seeds)
    with shown_on_failure(payload=payload), store_factory.pipeline() as pipeline:
        report = ingest_payload(pipeline, payload, "WEAR", "fuzz")
        assert_batch_sound(pipeline, report)


@fuzz_settings(default=6)
@given(data=st.data())
def test_mutated_device_posts_over_http_are_answered_with_counts(
    data: st.DataObject, device_seeds: list[Any], store_factory: Any
) -> None:
    """Every post to the real endpoint is answered 200 with counts that reconcile."""
    payloads = [_payload(data, device_seeds) for _ in range(3)]
    with (
        shown_on_failure(payloads=payloads),
        store_factory.pipeline() as pipeline,
        _device_server(pipeline) as (base, headers),
    ):
        for payload in payloads:
            answer = httpx.post(f"{base}/ingest/device/WEAR", content=payload, headers=headers, timeout=60)
            assert answer.status_code == 200, answer.text
            counts = answer.json()
            assert counts["received"] == counts["stored"] + counts["quarantined"] + counts["duplicates"]
        with pipeline.engine.connect() as conn:
            batches = conn.execute(ingest_batch.select()).all()
        assert len(batches) == len(payloads)


@pytest.mark.mqtt
@fuzz_settings(default=4)
@given(data=st.data())
def test_mutated_device_messages_over_mqtt_are_all_ingested(
    data: st.DataObject, device_seeds: list[Any], store_factory: Any
) -> None:
    """The subscriber survives every message and its batches reconcile."""
    import paho.mqtt.client as mqtt

    payloads = [_payload(data, device_seeds) for _ in range(3)]
    topic = f"rhip-fuzz/{uuid.uuid4().hex}/WEAR"
    with shown_on_failure(payloads=payloads), store_factory.pipeline() as pipeline:
        sub = MqttSubscriber(pipeline, "mqtt://127.0.0.1:1883", topic, batch_wait=0.05, session_expiry=60)
        stop = threading.Event()
        errors: list[BaseException] = []

        def consume() -> None:
            try:
                sub.run(stop, max_messages=len(payloads))
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=consume)
        thread.start()
        assert sub.subscribed.wait(10)
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        pub.connect("127.0.0.1", 1883)
        pub.loop_start()
        for payload in payloads:
            pub.publish(topic, payload, qos=1).wait_for_publish(5)
        thread.join(timeout=60)
        stop.set()
        pub.loop_stop()
        pub.disconnect()
        assert not errors, errors
        assert sub.report.reconciled
        with pipeline.engine.connect() as conn:
            batches = conn.execute(ingest_batch.select()).all()
        assert sum(b.received for b in batches) == sub.report.received
        assert_stored_valid(pipeline)
