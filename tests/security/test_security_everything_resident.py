"""``Patient/{id}/$everything`` over an MPI resident with authentication on, over real HTTP.

One resident has a source record at facility A (er1, where docA treated them) and one at facility
B (er2), linked by the MPI to a golden Patient; a third record (er3, another citizen ID) is linked
to the same resident by mistake; another person (eo1) is also docA's patient. The
whole-resident answer passes the policy resource by resource: an administrator gets every record,
the resident gets their own, a practitioner gets no more than record-by-record requests would give
them, and one without any relationship gets nothing. The audit names every resident concerned.
Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest

from rhip.config import Settings
from rhip.fhir import systems
from rhip.fhir.identifiers import make_citizen_id
from rhip.security.audit import iter_entries
from rhip_testkit import new_pg_database, running_server

pytestmark = pytest.mark.xdist_group("security_everything_resident")
#: The resident's records at facility A and at B; the other person's records (also at A).
AT_A = {"er1", "encE1", "obsE1"}
AT_B = {"er2", "encE2", "obsE2"}
OTHER = {"eo1", "encO1", "obsO1"}
WRONG_CID = make_citizen_id("370102", date(1971, 4, 5), 226, "female")
DIRECTORY = {"orgA", "orgB", "docA"}
ACCOUNTS: dict[str, tuple[str, dict[str, str]]] = {
    "admin": ("platform_admin", {}),
    "resident1": ("resident", {"patient_id": "er1"}),
    "docA": ("practitioner", {"practitioner_id": "docA", "organization_id": "orgA"}),
    "docGP": ("practitioner", {"practitioner_id": "docGP"}),
}


@dataclass
class Linked:
    """A running server with authentication on, a token per account, and the resident's golden id."""

    base: str
    app: Any
    tokens: dict[str, str]
    golden: str

    def everything(self, who: str, pid: str, **params: str) -> httpx.Response:
        """``Patient/{pid}/$everything`` as ``who``."""
        headers = {"Authorization": f"Bearer {self.tokens[who]}"}
        return httpx.get(f"{self.base}/Patient/{pid}/$everything", params=params, headers=headers, timeout=60)

    def ids(self, who: str, pid: str, **params: str) -> set[str]:
        """The ids ``who`` gets from ``$everything`` (empty on 404), AuditEvents left out."""
        response = self.everything(who, pid, **params)
        if response.status_code == 404:
            return set()
        assert response.status_code == 200, (who, pid, response.text)
        # the MPI's AuditEvent of the correction that linked er3 sits in the compartment too
        entries = [e["resource"] for e in response.json().get("entry", [])]
        return {r["id"] for r in entries if r["resourceType"] != "AuditEvent"}

    def audit(self) -> list[dict[str, Any]]:
        """Every audit entry so far."""
        self.app.state.security.writer.flush()
        return [entry for _, entry in iter_entries(self.app.state.store.engine)]


def _patient(rid: str, cid: str, born: str, org: str, card: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient", "id": rid,
        "identifier": [{"system": systems.CITIZEN_ID, "value": cid},
                       {"system": systems.facility_card_system(org, "outpatient"), "value": card}],
        "name": [{"use": "official", "family": "赵", "given": ["敏"]}],
        "gender": "female", "birthDate": born,
        "managingOrganization": {"reference": f"Organization/{org}"},
    }  # fmt: skip


def _visit(enc: str, obs: str, pid: str, org: str, prac: str | None) -> list[dict[str, Any]]:
    encounter: dict[str, Any] = {
        "resourceType": "Encounter", "id": enc, "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{pid}"}, "serviceProvider": {"reference": f"Organization/{org}"},
    }  # fmt: skip
    if prac:
        encounter["participant"] = [{"individual": {"reference": f"Practitioner/{prac}"}}]
    observation = {
        "resourceType": "Observation", "id": obs, "status": "final",
        "code": {"coding": [{"system": systems.LOINC, "code": "2345-7"}]},
        "subject": {"reference": f"Patient/{pid}"}, "encounter": {"reference": f"Encounter/{enc}"},
    }  # fmt: skip
    return [encounter, observation]


def _seed(store: Any) -> str:
    """Write the records, link the Patients through the MPI; the resident's golden id."""
    from rhip.mpi.service import match_and_link

    cid = make_citizen_id("370102", date(1971, 4, 5), 222, "female")
    other = make_citizen_id("370102", date(1990, 8, 9), 444, "female")
    bodies = [
        {"resourceType": "Organization", "id": "orgA", "name": "A"},
        {"resourceType": "Organization", "id": "orgB", "name": "B"},
        {"resourceType": "Practitioner", "id": "docA"},
        _patient("er1", cid, "1971-04-05", "orgA", "MZ-31"),
        _patient("er2", cid, "1971-04-05", "orgB", "MZ-32"),
        _patient("eo1", other, "1990-08-09", "orgA", "MZ-33"),
        *_visit("encE1", "obsE1", "er1", "orgA", "docA"),
        *_visit("encE2", "obsE2", "er2", "orgB", None),
        *_visit("encO1", "obsO1", "eo1", "orgA", "docA"),
    ]
    residents = {}
    for body in bodies:
        store.update(body["resourceType"], body["id"], body)
        if body["resourceType"] == "Patient":
            residents[body["id"]] = match_and_link(store, store.read("Patient", body["id"])).resident_id
    assert residents["er1"] == residents["er2"] != residents["eo1"]
    store.update("Patient", "er3", _patient("er3", WRONG_CID, "1971-04-05", "orgB", "MZ-34"))
    match_and_link(store, store.read("Patient", "er3"))
    _force_link(store, "er3", residents["er1"])
    return residents["er1"]


def _force_link(store: Any, record: str, resident: str) -> None:
    """Link a record to a resident by a reviewer's correction, whatever its evidence (a wrong link)."""
    from rhip.mpi.corrections import link_record

    link_record(store, record, resident, actor="reviewer")


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def linked(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Linked]:
    """uvicorn with authentication on over a store holding the linked resident (SQLite or PostgreSQL)."""
    from rhip.api import create_app
    from rhip.security.testing import issue_token
    from rhip.store import Store

    with ExitStack() as stack:
        data_dir: Path = tmp_path_factory.mktemp("everything_resident")
        if request.param == "sqlite":
            url = f"sqlite:///{data_dir / 'rhip.sqlite'}"
        else:
            url = stack.enter_context(new_pg_database("rhip_everything"))
        store = Store(url)
        stack.callback(store.close)
        golden = _seed(store)
        app = create_app(store, Settings(data_dir=data_dir, database_url=url, auth_enabled=True))
        tokens = {
            name: issue_token(app, role=role, username=name, **binding)
            for name, (role, binding) in ACCOUNTS.items()
        }
        base = stack.enter_context(running_server(app)) + "/fhir"
        yield Linked(base, app, tokens, golden)


def test_admin_gets_the_whole_resident_and_the_audit_names_every_record(linked: Linked) -> None:
    ids = linked.ids("admin", linked.golden)
    assert ids == {linked.golden} | AT_A | AT_B | {"er3"} | DIRECTORY
    assert linked.ids("admin", "er2", _mdm="true") == ids
    done = [
        e for e in linked.audit()
        if e["actor"] == "admin" and e["action"] == "operation" and e["outcome"] == "0"
        and e["path"] == f"/fhir/Patient/{linked.golden}/$everything"
    ]  # fmt: skip
    assert done and {linked.golden, "er1", "er2"} <= set(done[-1]["patients"])
    assert "eo1" not in done[-1]["patients"]


def test_resident_sees_their_own_record(linked: Linked) -> None:
    own = linked.ids("resident1", "er1")
    assert own >= AT_A and not own & (OTHER | AT_B)
    whole = linked.ids("resident1", "er1", _mdm="true")
    assert whole >= AT_A  # every record the policy lets them see, never another person's
    assert whole <= {linked.golden} | AT_A | AT_B | DIRECTORY and "er3" not in whole
    assert linked.everything("resident1", "eo1", _mdm="true").status_code == 404


def test_resident_sees_their_records_of_every_facility_from_the_golden_id(linked: Linked) -> None:
    whole = linked.ids("resident1", linked.golden)
    assert whole >= AT_A | AT_B
    assert "er3" not in whole and not whole & OTHER  # the same citizen ID, not just the MPI link


def test_resident_who_read_my_records_covers_every_facility(linked: Linked) -> None:
    assert linked.ids("admin", "er2")  # a read of the resident's record at facility B
    headers = {"Authorization": f"Bearer {linked.tokens['resident1']}"}
    response = httpx.get(f"{linked.base}/AuditEvent", params={"entity": "Patient/er1"}, headers=headers)
    assert response.status_code == 200, response.text
    events = [e["resource"] for e in response.json()["entry"]]
    read_b = [
        ev for ev in events
        if ev["agent"][0]["who"]["identifier"]["value"] == "admin"
        and {"reference": "Patient/er2"} in [x["what"] for x in ev["entity"]]
    ]  # fmt: skip
    assert read_b, "the admin's read of er2 is missing from the resident's view"
    assert len({e["id"] for e in events}) == len(events)  # an entry naming er1 and er2 comes once


def test_practitioner_gets_nothing_beyond_record_by_record(linked: Linked) -> None:
    whole = linked.ids("docA", "er1", _mdm="true")
    assert whole >= AT_A and not whole & OTHER
    one_by_one = linked.ids("docA", "er1") | linked.ids("docA", "er2") | linked.ids("docA", "er3")
    assert whole - {linked.golden} == one_by_one - {linked.golden}
    if "encE2" not in whole:  # a hidden visit must not reveal its facility through a reference
        assert "orgB" not in whole


def test_practitioner_without_relationship_gets_nothing(linked: Linked) -> None:
    for pid, params in ((linked.golden, {}), ("er1", {"_mdm": "true"}), ("er2", {"_mdm": "true"})):
        response = linked.everything("docGP", pid, **params)
        assert response.status_code == 404, (pid, response.text)
        assert "赵" not in response.text and "obsE" not in response.text
    refused = [e for e in linked.audit() if e["actor"] == "docGP" and e["action"] == "operation"]
    assert refused and all(e["outcome"] == "4" for e in refused)
