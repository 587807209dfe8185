"""Over a real socket: uvicorn serving the app, driven by httpx and by the fhirclient library."""

from __future__ import annotations

import gzip
import json

import httpx
import pytest
from api_testkit import FHIR_JSON, patient


def test_gzip_when_asked(live_server):
    with httpx.Client(timeout=30) as http:
        raw = http.get(f"{live_server}/metadata", headers={"Accept-Encoding": "gzip"})
        assert raw.status_code == 200
        assert raw.headers["content-encoding"] == "gzip"
        assert raw.json()["resourceType"] == "CapabilityStatement"
        plain = http.get(f"{live_server}/metadata", headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers
        assert plain.json() == raw.json()
    with httpx.Client(timeout=30, headers={"Accept-Encoding": "gzip"}) as http:
        stream = http.build_request("GET", f"{live_server}/metadata")
        response = http.send(stream, stream=True)
        compressed = b"".join(response.iter_raw())
        response.close()
        assert json.loads(gzip.decompress(compressed))["fhirVersion"] == "4.0.1"


def test_crud_over_http(live_server):
    with httpx.Client(timeout=30, headers={"content-type": FHIR_JSON}) as http:
        created = http.post(f"{live_server}/Patient", content=json.dumps(patient(family="Socket")))
        assert created.status_code == 201
        location = created.headers["location"]
        assert location.startswith(f"{live_server}/Patient/")
        pid = created.json()["id"]
        assert http.get(f"{live_server}/Patient/{pid}").json()["name"][0]["family"] == "Socket"
        assert http.get(f"{live_server}/Patient/{pid}/_history/1").status_code == 200
        assert http.delete(f"{live_server}/Patient/{pid}").status_code == 200
        gone = http.get(f"{live_server}/Patient/{pid}")
        assert gone.status_code == 410
        assert gone.json()["resourceType"] == "OperationOutcome"
        assert http.get(f"{live_server.rsplit('/', 1)[0]}/not-fhir").status_code == 404


def test_fhirclient_crud_search_and_paging(live_server):
    from fhirclient import client as fhir_client
    from fhirclient.models.humanname import HumanName
    from fhirclient.models.patient import Patient

    smart = fhir_client.FHIRClient(settings={"app_id": "rhip-tests", "api_base": live_server + "/"})
    statement = smart.server.capabilityStatement
    assert statement.fhirVersion == "4.0.1"
    ids = []
    for i in range(23):
        pat = Patient({"resourceType": "Patient", "gender": "male"})
        name = HumanName()
        name.family = "Fhirclient"
        name.given = [f"Number{i:02d}"]
        pat.name = [name]
        result = pat.create(smart.server)
        assert result is not None
        ids.append(result["id"])
    read = Patient.read(ids[0], smart.server)
    assert read.name[0].family == "Fhirclient"
    read.gender = "female"
    read.update(smart.server)
    assert Patient.read(ids[0], smart.server).gender == "female"
    search = Patient.where(struct={"family": "Fhirclient"})
    first_page = search.perform(smart.server)
    assert first_page.total == 23
    assert len(first_page.entry) == 10  # the live server pages at 10
    every = list(Patient.where(struct={"family": "Fhirclient"}).perform_resources_iter(smart.server))
    assert sorted(p.id for p in every) == sorted(ids)
    Patient.read(ids[1], smart.server).delete(smart.server)
    remaining = Patient.where(struct={"family": "Fhirclient"}).perform(smart.server)
    assert remaining.total == 22
    from fhirclient.server import FHIRNotFoundException

    with pytest.raises(FHIRNotFoundException):
        Patient.read("no-such-patient", smart.server)


def test_concurrent_creates_each_get_their_own_resource(live_server):
    """Concurrent POSTs on SQLite are group-committed; each still gets its own id, version 1 and history."""
    from concurrent.futures import ThreadPoolExecutor

    def create(i: int) -> httpx.Response:
        with httpx.Client(timeout=60, headers={"content-type": FHIR_JSON}) as http:
            return http.post(
                f"{live_server}/Patient", content=json.dumps(patient(family="Burst", given=f"B{i}"))
            )

    with ThreadPoolExecutor(max_workers=12) as pool:
        responses = list(pool.map(create, range(48)))
    assert all(r.status_code == 201 for r in responses), [r.text for r in responses if r.status_code != 201]
    bodies = [r.json() for r in responses]
    assert len({b["id"] for b in bodies}) == 48
    assert sorted(b["name"][0]["given"][0] for b in bodies) == sorted(f"B{i}" for i in range(48))
    with httpx.Client(timeout=30) as http:
        for body, response in zip(bodies, responses, strict=True):
            assert body["meta"]["versionId"] == "1"
            assert response.headers["location"].endswith(f"/Patient/{body['id']}/_history/1")
            assert http.get(f"{live_server}/Patient/{body['id']}").json() == body
        history = http.get(f"{live_server}/Patient/{bodies[0]['id']}/_history").json()
        assert [e["request"]["method"] for e in history["entry"]] == ["POST"]
        found = http.get(f"{live_server}/Patient", params={"family": "Burst", "_summary": "count"}).json()
        assert found["total"] == 48


def test_grouped_commit_writes_each_resource_like_a_create(tmp_path):
    """One group commit gives every resource its own id, version 1, a POST history row and search rows."""
    import threading

    from rhip.api.batching import CreateBatcher, CreateResult, groupable
    from rhip.store import Store

    store = Store(f"sqlite:///{tmp_path / 'g.sqlite'}")
    batcher = CreateBatcher(store, threading.Lock())
    tag = {"system": "https://rhip.example.org/fhir/tag", "code": "t1"}
    resources = [patient(family=f"Grouped{i}", id="client-id-ignored", meta={"tag": [tag]}) for i in range(3)]
    results = batcher.commit(resources)
    assert all(isinstance(r, CreateResult) for r in results)
    assert len({r.resource["id"] for r in results}) == 3
    for i, result in enumerate(results):
        assert result.created and result.version_id == 1
        assert store.read("Patient", result.resource["id"]) == result.resource
        assert result.resource["name"][0]["family"] == f"Grouped{i}"
        assert result.resource["meta"]["tag"] == [tag]
        entries = store.history("Patient", result.resource["id"]).entries
        assert [e.method for e in entries] == ["POST"]
        assert store.search("Patient", [("family", f"Grouped{i}")], count=5).total == 1
    assert not groupable(patient(managingOrganization={"reference": "urn:uuid:1234"}))
    assert not groupable(patient(managingOrganization={"reference": "Organization?identifier=x|1"}))
    assert groupable(patient(managingOrganization={"reference": "Organization/1"}))
    store.close()
