"""Bulk Data $export end to end: a real uvicorn server, an httpx client kicking off and polling."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from rhip.config import Settings
from rhip_testkit import running_server

#: Data directory of each running test server, by base URL.
server_data_dir: dict[str, str] = {}


def _resources() -> list[dict]:
    out: list[dict] = []
    for i in range(6):
        out.append({"resourceType": "Patient", "id": f"p{i}", "gender": "female" if i % 2 else "male"})
        for j in range(3):
            cat = "laboratory" if j == 0 else "vital-signs"
            out.append({
                "resourceType": "Observation", "id": f"o{i}-{j}", "status": "final",
                "category": [{"coding": [{"code": cat}]}], "code": {"text": "x"},
                "subject": {"reference": f"Patient/p{i}"},
            })  # fmt: skip
    out.append({"resourceType": "Organization", "id": "org1", "name": "Hospital"})
    out.append({
        "resourceType": "Group", "id": "g1", "type": "person", "actual": True,
        "member": [{"entity": {"reference": "Patient/p1"}}, {"entity": {"reference": "Patient/p2"}}],
    })  # fmt: skip
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from rhip.api import create_app
    from rhip.store import Store

    data_dir = tmp_path_factory.mktemp("bulk")
    url = f"sqlite:///{data_dir / 'rhip.sqlite'}"
    store = Store(url)
    store.bulk_write(_resources())
    app = create_app(store, Settings(data_dir=data_dir, database_url=url, auth_enabled=False))
    with running_server(app, lifespan="auto", timeout=30) as root:
        base = f"{root}/fhir"
        server_data_dir[base] = str(data_dir)
        yield base
    store.close()


def _run_export(client: httpx.Client, url: str) -> tuple[dict, dict[str, list[dict]]]:
    kick = client.get(url, headers={"Prefer": "respond-async", "Accept": "application/fhir+json"})
    assert kick.status_code == 202, kick.text
    status_url = kick.headers["Content-Location"]
    deadline = time.monotonic() + 30
    while True:
        resp = client.get(status_url)
        if resp.status_code == 200:
            break
        assert resp.status_code == 202, resp.text
        assert "X-Progress" in resp.headers
        assert time.monotonic() < deadline, "export did not finish"
        time.sleep(0.2)
    manifest = resp.json()
    files: dict[str, list[dict]] = {}
    for out in manifest["output"]:
        got = client.get(out["url"])
        assert got.status_code == 200
        assert got.headers["content-type"].startswith("application/fhir+ndjson")
        rows = [orjson.loads(line) for line in got.content.splitlines() if line]
        assert len(rows) == out["count"]
        files.setdefault(out["type"], []).extend(rows)
    return manifest, files


def test_system_export_polls_to_a_manifest(server: str) -> None:
    with httpx.Client(timeout=10) as client:
        manifest, files = _run_export(client, f"{server}/$export")
    assert manifest["request"].endswith("/fhir/$export")
    assert manifest["transactionTime"]
    assert {t: len(v) for t, v in files.items()} == {
        "Group": 1,
        "Observation": 18,
        "Organization": 1,
        "Patient": 6,
    }


def test_type_and_type_filter(server: str) -> None:
    url = f"{server}/$export?_type=Observation,Patient&_typeFilter=Observation%3Fcategory%3Dlaboratory"
    with httpx.Client(timeout=10) as client:
        _, files = _run_export(client, url)
    assert sorted(files) == ["Observation", "Patient"]
    assert len(files["Observation"]) == 6
    assert all(o["category"][0]["coding"][0]["code"] == "laboratory" for o in files["Observation"])


def test_patient_and_group_level(server: str) -> None:
    with httpx.Client(timeout=10) as client:
        _, everyone = _run_export(client, f"{server}/Patient/$export")
        _, group = _run_export(client, f"{server}/Group/g1/$export?_type=Patient,Observation")
    assert "Organization" not in everyone and len(everyone["Observation"]) == 18
    assert sorted(p["id"] for p in group["Patient"]) == ["p1", "p2"]
    assert {o["subject"]["reference"] for o in group["Observation"]} == {"Patient/p1", "Patient/p2"}


def test_since_excludes_older_resources(server: str) -> None:
    from rhip.store import format_instant

    future = format_instant(time.time() + 3600)
    with httpx.Client(timeout=10) as client:
        manifest, files = _run_export(client, f"{server}/$export?_since={future.replace('+', '%2B')}")
    assert files == {} and manifest["output"] == []


def test_delete_removes_the_job(server: str) -> None:
    with httpx.Client(timeout=10) as client:
        kick = client.post(f"{server}/$export", headers={"Prefer": "respond-async"})
        status_url = kick.headers["Content-Location"]
        assert client.delete(status_url).status_code == 202
        assert client.get(status_url).status_code == 404


def test_bad_requests_are_operation_outcomes(server: str) -> None:
    with httpx.Client(timeout=10) as client:
        bad_format = client.get(
            f"{server}/$export?_outputFormat=text/csv", headers={"Prefer": "respond-async"}
        )
        unknown_group = client.get(f"{server}/Group/nope/$export", headers={"Prefer": "respond-async"})
        unknown_job = client.get(f"{server}/$export-status/{'0' * 32}")
    assert bad_format.status_code == 400 and bad_format.json()["resourceType"] == "OperationOutcome"
    assert unknown_group.status_code == 404
    assert unknown_job.status_code == 404


def test_view_definitions_are_managed_and_run_over_the_api(server: str) -> None:
    from rhip.config import Settings
    from rhip.lake.export import export_store
    from rhip.store import Store

    data_dir = Path(server_data_dir[server])
    store = Store(f"sqlite:///{data_dir / 'rhip.sqlite'}")
    export_store(store, Settings(data_dir=data_dir).lake_dir)
    store.close()
    view = {
        "resourceType": "ViewDefinition", "name": "genders", "resource": "Patient", "status": "active",
        "select": [{"column": [{"name": "id", "path": "id"}, {"name": "gender", "path": "gender"}]}],
    }  # fmt: skip
    with httpx.Client(timeout=30) as client:
        created = client.post(f"{server}/ViewDefinition", json=view)
        assert created.status_code == 201, created.text
        vid = created.json()["id"]
        assert client.get(f"{server}/ViewDefinition/{vid}").json()["name"] == "genders"
        listed = client.get(f"{server}/ViewDefinition").json()
        assert listed["total"] >= 1
        rows = client.get(f"{server}/ViewDefinition/{vid}/$run").json()
        assert sorted(r["gender"] for r in rows) == ["female"] * 3 + ["male"] * 3
        csv_rows = client.get(f"{server}/ViewDefinition/{vid}/$run?_format=csv").text.splitlines()
        assert csv_rows[0] == "id,gender" and len(csv_rows) == 7
        bad = client.post(f"{server}/ViewDefinition", json={"resource": "Patient", "select": "x"})
        assert bad.status_code in (400, 422)
        assert client.delete(f"{server}/ViewDefinition/{vid}").status_code == 204
        assert client.get(f"{server}/ViewDefinition/{vid}").status_code == 410


def test_job_files_stay_inside_the_data_dir(tmp_path: Path) -> None:
    """Job and file names are validated, so a crafted name cannot escape the jobs folder."""
    from rhip.errors import ResourceNotFound
    from rhip.lake.bulk import JobManager

    manager = JobManager(tmp_path, lambda: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(ResourceNotFound):
        manager.get("../etc")
    with pytest.raises(ResourceNotFound):
        manager.file("0" * 32, "../../job.json")
