"""Device readings over a real HTTP server and the real Mosquitto broker -> vital-sign Observations."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import httpx
import orjson
import pytest
from fastapi import FastAPI

from rhip.ingest import api as ingest_api
from rhip.ingest.device import MqttSubscriber
from rhip.ingest.hooks import patient_sinks, unregister_patient_sink
from rhip.ingest.pipeline import Pipeline
from rhip.quality import api as quality_api
from rhip.store import Store
from rhip_testkit import running_server

PATIENT = {"system": "urn:oid:2.16.156.10011.1.3", "value": "330402198005061238"}


def _reading(minute: int, hr: float = 72) -> dict[str, object]:
    return {
        "device_id": "W-1",
        "patient": PATIENT,
        "type": "heart-rate",
        "value": hr,
        "unit": "bpm",
        "time": f"2026-11-01T08:{minute:02d}:00+08:00",
    }


@pytest.fixture
def server(sqlite_store: Store) -> Iterator[str]:
    """A real uvicorn server with the ingest and quality routers on a free port."""
    app = FastAPI()
    app.state.store = sqlite_store
    app.include_router(ingest_api.router)
    app.include_router(quality_api.router)
    before = patient_sinks()
    with running_server(app, lifespan="auto", timeout=10) as root:
        yield root
    for sink in patient_sinks():
        if sink not in before:
            unregister_patient_sink(sink)  # the app installs the identity sink process-wide


def test_http_readings_and_quality_api(server: str, sqlite_store: Store) -> None:
    payload = {
        "readings": [
            _reading(0),
            _reading(1),
            _reading(2, hr=400),
            {
                "device_id": "W-1",
                "patient": PATIENT,
                "type": "blood-pressure",
                "systolic": 130,
                "diastolic": 85,
                "time": "2026-11-01T08:03:00+08:00",
            },
            {"device_id": "W-1", "type": "heart-rate", "value": "fast", "time": "2026-11-01T08:04:00"},
        ]
    }
    r = httpx.post(f"{server}/ingest/device/WEAR", content=orjson.dumps(payload), timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["received"], body["stored"], body["quarantined"]) == (5, 4, 1)
    assert body["resources"] == 4  # one Observation per reading (blood pressure as components)
    again = httpx.post(f"{server}/ingest/device/WEAR", content=orjson.dumps(payload), timeout=30).json()
    # the bad reading has its quarantine entry already: a duplicate, like the stored ones
    assert (again["stored"], again["duplicates"], again["quarantined"]) == (0, 5, 0)
    obs = [o for o, *_ in sqlite_store.iter_current("Observation") if o]
    assert len(obs) == 4
    hr = next(o for o in obs if o["code"]["coding"][0]["code"] == "8867-4")
    assert hr["valueQuantity"]["code"] == "/min" and hr["category"][0]["coding"][0]["code"] == "vital-signs"
    bad_text = httpx.post(f"{server}/ingest/device/WEAR", content=b"{not json", timeout=30).json()
    assert bad_text["quarantined"] == 1
    rules = httpx.get(f"{server}/quality/scores/rules", params={"facility": "WEAR"}, timeout=30).json()
    vital = next(r for r in rules if r["rule"] == "plausibility.vital-range")
    assert vital["failed"] == 1 and vital["checked"] >= 3  # the 400/min reading
    scores = httpx.get(f"{server}/quality/scores", timeout=30).json()
    assert scores[0]["facility"] == "WEAR" and 0 < scores[0]["score"] < 100
    batches = httpx.get(f"{server}/ingest/batches", params={"facility": "WEAR"}, timeout=30).json()
    assert len(batches) == 3 and all(
        b["received"] == b["stored"] + b["quarantined"] + b["duplicates"] for b in batches
    )
    quarantine = httpx.get(f"{server}/ingest/quarantine", params={"facility": "WEAR"}, timeout=30).json()
    assert {q["reasons"][0]["rule"] for q in quarantine} == {"required", "json-syntax"}
    assert "fast" not in str(quarantine)  # reasons only, never the record
    one = httpx.get(f"{server}/ingest/quarantine/{quarantine[0]['id']}", timeout=30).json()
    assert one["id"] == quarantine[0]["id"]
    catalogue = httpx.get(f"{server}/quality/rules", timeout=30).json()
    assert {"completeness", "conformance", "plausibility", "timeliness"} == {
        c["dimension"] for c in catalogue
    }


@pytest.mark.mqtt
def test_mqtt_readings_from_real_broker(sqlite_pipeline: Pipeline) -> None:
    import paho.mqtt.client as mqtt

    topic = f"rhip-test/{uuid.uuid4().hex}/WEAR2"
    sub = MqttSubscriber(sqlite_pipeline, "mqtt://127.0.0.1:1883", topic, batch_wait=0.05, session_expiry=60)
    stop = threading.Event()
    result: dict[str, object] = {}
    thread = threading.Thread(target=lambda: result.setdefault("rep", sub.run(stop, max_messages=3)))
    thread.start()
    assert sub.subscribed.wait(10)
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", 1883)
    pub.loop_start()
    for m in range(3):
        pub.publish(topic, orjson.dumps(_reading(m)), qos=1).wait_for_publish(5)
    thread.join(timeout=30)
    stop.set()
    pub.loop_stop()
    pub.disconnect()
    rep = result["rep"]
    assert getattr(rep, "stored") == 3  # noqa: B009
    assert sqlite_pipeline.store.count("Observation") == 3
    obs = next(iter(sqlite_pipeline.store.iter_current("Observation")))[0]
    assert obs is not None and "WEAR2" in obs["meta"]["source"]


def test_demo_gateway_posts_are_authenticated_and_audited(sqlite_store: Store, tmp_path) -> None:
    """post_files runs the platform's API with authentication on: a post without the gateway's
    token is refused (401), the gateway's posts are stored and each is in the audit chain."""
    from rhip.ingest.device import _device_server, post_files
    from rhip.security.audit import iter_entries

    readings = tmp_path / "W-1.jsonl"
    readings.write_bytes(b"\n".join(orjson.dumps(_reading(m)) for m in range(3)) + b"\n")
    pipeline = Pipeline(sqlite_store)
    with _device_server(pipeline) as (base, headers):
        assert headers["Authorization"].startswith("Bearer ")
        refused = httpx.post(f"{base}/ingest/device/F1", content=b"[]", timeout=30)
        assert refused.status_code == 401
    report = post_files(pipeline, [readings], "F1", per_post=2)
    assert (report.received, report.stored) == (3, 3)
    posts = [
        e
        for _, e in iter_entries(sqlite_store.engine)
        if e.get("actor") == "device-gateway" and e.get("path") == "/ingest/device/F1"
    ]
    assert len(posts) == 2 and all(e["outcome"] == "0" for e in posts)


def test_a_gateway_bound_to_a_facility_sends_for_that_facility_only(sqlite_store: Store) -> None:
    from rhip.api.app import create_app
    from rhip.security.testing import issue_token
    from rhip_testkit import running_server

    app = create_app(sqlite_store, router_modules=("rhip.security.api", "rhip.ingest.api"))
    app.state.ingest_pipeline = Pipeline(sqlite_store)  # not the server's own: no process-wide MPI sink
    token = issue_token(app, role="system", organization_id="F2", scope="system/Observation.write")
    headers = {"Authorization": f"Bearer {token}"}
    body = orjson.dumps([_reading(0)])
    with running_server(app) as base:
        other = httpx.post(f"{base}/ingest/device/F1", content=body, headers=headers, timeout=30)
        own = httpx.post(f"{base}/ingest/device/F2", content=body, headers=headers, timeout=30)
    assert other.status_code == 403 and "'F2' only" in other.json()["issue"][0]["diagnostics"]
    assert own.status_code == 200 and own.json()["stored"] == 1
    assert sqlite_store.count("Observation") == 1


def test_a_reading_without_device_id_or_time_names_what_it_lacks(sqlite_pipeline: Pipeline) -> None:
    """The reason was one 'required' on path 'device_id|time' whichever of the two was missing."""
    from rhip.ingest.device import ingest_payload
    from rhip.ingest.quarantine import list_entries

    simple = {"type": "heart-rate", "value": 72, "unit": "bpm", "patient_id": "p1"}
    payload = [
        {**simple, "time": "2026-11-01T08:00:00+08:00"},
        {**simple, "device_id": "W-1"},
        simple,
    ]
    report = ingest_payload(sqlite_pipeline, orjson.dumps(payload), "WEAR", "http")
    assert (report.received, report.quarantined) == (3, 3)
    entries = list_entries(sqlite_pipeline.store.engine, facility="WEAR")
    assert [[(r["rule"], r["path"]) for r in e.reasons] for e in entries] == [
        [("required", "device_id")],
        [("required", "time")],
        [("required", "device_id"), ("required", "time")],
    ]
    assert entries[0].reasons[0]["message"] == "reading has no device_id"


def test_a_bad_reading_is_quarantined_once_whether_alone_or_in_readings(
    server: str, sqlite_store: Store
) -> None:
    """Regression: a reading inside ``{"readings": [...]}`` was re-serialised while one posted alone
    was kept verbatim, so the same bad reading sent both ways got two quarantine entries."""
    from rhip.ingest.quarantine import list_entries

    bad = b'{"device_id": "W-9", "type": "heart-rate", "value": "fast", "time": "2026-11-01T08:05:00"}'
    alone = httpx.post(f"{server}/ingest/device/WEAR", content=bad + b"\n", timeout=30).json()
    assert (alone["received"], alone["quarantined"]) == (1, 1)
    wrapped = b'{"readings": [ ' + bad + b" ]}"
    listed = httpx.post(f"{server}/ingest/device/WEAR", content=wrapped, timeout=30).json()
    assert (listed["received"], listed["quarantined"], listed["duplicates"]) == (1, 0, 1)
    as_list = httpx.post(f"{server}/ingest/device/WEAR", content=b"[" + bad + b"]", timeout=30).json()
    assert (as_list["quarantined"], as_list["duplicates"]) == (0, 1)
    entries = list_entries(sqlite_store.engine, facility="WEAR")
    assert len(entries) == 1


def test_readings_keep_the_bytes_they_were_sent_as() -> None:
    """Each reading of a list or ``{"readings": [...]}`` is its own text, numbers as written."""
    from rhip.ingest.device import readings

    one = b'{"value": 72.50, "unit": "bpm", "note": "\\u4f60 [x], {y}"}'
    two = b'{"value": 1e2}'
    assert readings(b" " + one + b"\r\n") == [one]
    assert readings(b"[ " + one + b" ,\n" + two + b"]") == [one, two]
    wrapped = b'{"gateway": {"readings": 1}, "readings" : [' + one + b"," + two + b'], "n": [1]}'
    assert readings(wrapped) == [one, two]
    assert readings(b'{"readings": [1], "readings": [' + two + b"]}") == [two]
    assert readings(b"[]") == [] and readings(b'{"readings": []}') == []
    assert readings(b"{not json") == [b"{not json"]
