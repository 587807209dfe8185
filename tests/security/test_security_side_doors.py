"""No side doors: bulk export jobs belong to their starter, and the MPI's resident reads are filtered.

A real uvicorn server with authentication on (the ``secured`` fixture) serves a store in which one
resident has two source records at two facilities, linked by the MPI, each with a mental-health
Condition that stays at its facility; practitioners of each facility, a practitioner without any
relationship and a platform admin use the export and MPI routes over HTTP.
"""

from __future__ import annotations

import time
from datetime import date
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest

from rhip.fhir import systems
from rhip.fhir.identifiers import make_citizen_id
from rhip.security.audit import iter_entries

if TYPE_CHECKING:  # the fixture's type only; importing conftest by name is ambiguous across folders
    from conftest import SecuredServer

pytestmark = pytest.mark.xdist_group("security_side_doors")
ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
CARD_A = (systems.facility_card_system("orgA", "outpatient"), "MZ-2001")
CARD_B = (systems.facility_card_system("orgB", "outpatient"), "MZ-9001")
#: Records of the linked resident at facility A (docA cares for mr1) and at facility B (docB: mr2),
#: shared over the MPI link; the sensitive Condition of each facility stays there.
AT_A = {"mr1", "encM1", "obsM1"}
AT_B = {"mr2", "encM2", "obsM2"}
HELD_A, HELD_B = {"condM1"}, {"condM2"}


def _source(rid: str, cid: str, card: tuple[str, str], org: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": rid,
        "identifier": [
            {"system": systems.CITIZEN_ID, "value": cid},
            {"system": card[0], "value": card[1]},
        ],
        "name": [{"use": "official", "family": "王", "given": ["芳"]}],
        "gender": "female",
        "birthDate": "1970-01-01",
        "managingOrganization": {"reference": f"Organization/{org}"},
    }


def _visit(enc: str, obs: str, patient: str, org: str, prac: str | None) -> list[dict[str, Any]]:
    """An Encounter, an Observation and a mental-health Condition (``cond`` + the Observation's suffix)."""
    encounter: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": enc,
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{patient}"},
        "serviceProvider": {"reference": f"Organization/{org}"},
    }
    if prac:
        encounter["participant"] = [{"individual": {"reference": f"Practitioner/{prac}"}}]
    observation = {
        "resourceType": "Observation",
        "id": obs,
        "status": "final",
        "code": {"coding": [{"system": systems.LOINC, "code": "2345-7"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "encounter": {"reference": f"Encounter/{enc}"},
    }
    condition = {
        "resourceType": "Condition",
        "id": "cond" + obs.removeprefix("obs"),
        "subject": {"reference": f"Patient/{patient}"},
        "encounter": {"reference": f"Encounter/{enc}"},
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "F32.9"}]},
    }
    return [encounter, observation, condition]


@pytest.fixture(scope="module")
def resident(secured: SecuredServer) -> str:
    """One resident, two source records (orgA and orgB) linked by the MPI; its golden Patient id."""
    from rhip.mpi.schema import ensure_schema
    from rhip.mpi.service import match_and_link

    store = secured.app.state.store
    ensure_schema(store.engine)
    cid = make_citizen_id("370102", date(1970, 1, 1), 321, "female")
    bodies = [_source("mr1", cid, CARD_A, "orgA"), _source("mr2", cid, CARD_B, "orgB")]
    bodies += _visit("encM1", "obsM1", "mr1", "orgA", "docA") + _visit("encM2", "obsM2", "mr2", "orgB", None)
    golden = set()
    for body in bodies:
        store.update(body["resourceType"], body["id"], body)
        if body["resourceType"] == "Patient":
            golden.add(match_and_link(store, store.read("Patient", body["id"])).resident_id)
    assert len(golden) == 1, "the two source records must be one resident"
    return golden.pop()


def _mpi(secured: SecuredServer, who: str, path: str, **kw: Any) -> httpx.Response:
    root = secured.base.removesuffix("/fhir")
    headers = {"Authorization": f"Bearer {secured.tokens[who]}"}
    return httpx.request(kw.pop("method", "GET"), f"{root}{path}", headers=headers, timeout=30, **kw)


def _ids(bundle: dict[str, Any]) -> set[str]:
    return {e["resource"]["id"] for e in bundle["entry"]}


def _entries(secured: SecuredServer) -> list[dict[str, Any]]:
    secured.app.state.security.writer.flush()
    return [entry for _, entry in iter_entries(secured.app.state.store.engine)]


def _export(secured: SecuredServer, who: str, path: str = "Patient/$export") -> str:
    kick = secured.get(who, path, headers=ASYNC)
    assert kick.status_code == 202, kick.text
    return str(kick.headers["Content-Location"]).removeprefix(secured.base + "/")


def _finish(secured: SecuredServer, who: str, status_url: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while (status := secured.get(who, status_url)).status_code == 202:
        assert time.monotonic() < deadline, "export did not finish"
        time.sleep(0.2)
    assert status.status_code == 200, status.text
    manifest: dict[str, Any] = status.json()
    return manifest


def test_export_job_belongs_to_its_starter(secured: SecuredServer, resident: str) -> None:
    status_url = _export(secured, "docA")
    manifest = _finish(secured, "docA", status_url)
    file_urls = [out["url"].removeprefix(secured.base + "/") for out in manifest["output"]]
    assert file_urls
    for other in ("docB", "admin"):  # nobody else, not even an administrator, can use the job URL
        refused = secured.get(other, status_url)
        assert refused.status_code == 403, (other, refused.text)
        assert refused.json()["resourceType"] == "OperationOutcome"
        assert refused.json()["issue"][0]["code"] == "forbidden"
        for url in file_urls:
            assert secured.get(other, url).status_code == 403, (other, url)
        assert httpx.delete(
            f"{secured.base}/{status_url}",
            headers={"Authorization": f"Bearer {secured.tokens[other]}"},
            timeout=30,
        ).status_code == 403  # fmt: skip
    exported: set[str] = set()
    for url in file_urls:
        response = secured.get("docA", url)
        assert response.status_code == 200
        exported |= {orjson.loads(line)["id"] for line in response.content.splitlines() if line}
    assert exported >= AT_A | AT_B  # the linked record of facility B is shared ...
    assert not exported & (HELD_B | {"obs2", "cond2", "encB2"})  # ... filtered for the starter
    owner_delete = httpx.delete(
        f"{secured.base}/{status_url}",
        headers={"Authorization": f"Bearer {secured.tokens['docA']}"},
        timeout=30,
    )
    assert owner_delete.status_code == 202
    assert secured.get("docA", status_url).status_code == 404
    refusals = [
        e
        for e in _entries(secured)
        if e["actor"] in ("docB", "admin") and "$export-" in (e.get("path") or "") and e["outcome"] == "4"
    ]
    assert {e["actor"] for e in refusals} == {"docB", "admin"}
    batches = [e for e in _entries(secured) if e["actor"] == "docA" and e["action"] == "export"]
    assert batches and {"mr1", "mr2"} <= {p for e in batches for p in e["patients"]}
    assert "pat4" not in {p for e in batches for p in e["patients"]}


def test_export_type_filter_side_channel_refused(secured: SecuredServer) -> None:
    path = "Patient/$export?_typeFilter=" + "Patient%3F_has%3AObservation%3Apatient%3Acode%3D2345-7"
    assert secured.get("docA", path, headers=ASYNC).status_code == 403
    admin_job = _export(secured, "admin", path)
    manifest = _finish(secured, "admin", admin_job)
    assert manifest["output"]


def test_mpi_everything_shows_only_permitted_records(secured: SecuredServer, resident: str) -> None:
    for who, mine, theirs in (("docA", AT_A | AT_B | HELD_A, HELD_B), ("docB", AT_A | AT_B | HELD_B, HELD_A)):
        response = _mpi(secured, who, f"/mpi/resident/{resident}/$everything")
        assert response.status_code == 200, (who, response.text)
        ids = _ids(response.json())
        assert resident in ids and mine <= ids, who
        assert not ids & theirs, (who, ids & theirs)
    full = _ids(_mpi(secured, "admin", f"/mpi/resident/{resident}/$everything").json())
    assert AT_A | AT_B | HELD_A | HELD_B | {resident} <= full
    stranger = _mpi(secured, "docGP", f"/mpi/resident/{resident}/$everything")
    assert stranger.status_code == 404  # no relationship: the resident is not disclosed
    assert "mr1" not in stranger.text and "王" not in stranger.text
    entries = _entries(secured)
    ok = [e for e in entries if e["actor"] == "docA" and e["action"] == "operation" and e["outcome"] == "0"]
    assert any({resident, "mr1", "mr2"} <= set(e["patients"]) for e in ok)
    assert any(e["actor"] == "docGP" and e["action"] == "operation" and e["outcome"] == "4" for e in entries)


def test_mpi_card_lookup_is_filtered(secured: SecuredServer, resident: str) -> None:
    for card in (CARD_A, CARD_B):  # either card finds the resident and both linked records
        response = _mpi(secured, "docA", "/mpi/resident", params={"card": "|".join(card)})
        assert response.status_code == 200, response.text
        entries = response.json()["entry"]
        assert entries[0]["resource"]["id"] == resident
        assert {e["resource"]["id"] for e in entries[1:]} == {"mr1", "mr2"}
    assert _ids(_mpi(secured, "admin", f"/mpi/resident/{resident}").json()) == {resident, "mr1", "mr2"}
    assert _mpi(secured, "docGP", "/mpi/resident", params={"card": "|".join(CARD_A)}).status_code == 404
    assert _mpi(secured, "docGP", f"/mpi/resident/{resident}").status_code == 404
    for who in ("resident1", "researcher", "ph"):  # the read routes are for clinicians
        assert _mpi(secured, who, f"/mpi/resident/{resident}").status_code == 403, who


def test_mpi_corrections_refused_for_clinicians(secured: SecuredServer, resident: str) -> None:
    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", "/mpi/review", None),
        ("POST", "/mpi/match", {"record": "Patient/mr1"}),
        ("POST", "/mpi/unlink", {"record": "Patient/mr2"}),
        ("POST", "/mpi/merge", {"source": f"Patient/{resident}", "target": "Patient/pat1"}),
        ("POST", "/mpi/link", {"record": "Patient/mr2", "resident": "Patient/pat1"}),
        ("POST", "/mpi/change/1/$revert", None),
    ]
    for who in ("docA", "docB"):
        for method, path, body in calls:
            response = _mpi(secured, who, path, method=method, json=body)
            assert response.status_code == 403, (who, path, response.status_code)
    assert _ids(_mpi(secured, "admin", f"/mpi/resident/{resident}").json()) == {resident, "mr1", "mr2"}
    review = _mpi(secured, "admin", "/mpi/review")
    assert review.status_code == 200 and "items" in review.json()
    refused = [e for e in _entries(secured) if e["actor"] == "docA" and e.get("path") == "/mpi/merge"]
    assert refused and all(e["outcome"] == "4" for e in refused)
