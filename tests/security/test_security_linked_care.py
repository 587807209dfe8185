"""A care relationship extends over a resident's MPI-linked records, except what consent keeps home.

Over real HTTP (the ``secured`` server): a resident has a record at facility A (docA treats them
there) and one at facility B. docA sees the B record once the MPI links the two, not before, not
after an unlink, never B's mental-health Condition, and nothing of B once the resident opts out of
sharing; MPI corrections made through ``/mpi`` take effect at once (the relationship cache is
cleared).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest
from security_seed import consent, linked_resident_records

if TYPE_CHECKING:  # the fixture's type only; importing conftest by name is ambiguous across folders
    from conftest import SecuredServer

pytestmark = pytest.mark.xdist_group("security_linked_care")
#: Shared with facility A through the link; kept at facility B whatever the link.
SHARED_B = {"Patient": "lp2", "Encounter": "encL2", "Observation": "obsL2"}
HELD_B = {"Condition": "condL2"}
AT_A = {"Patient": "lp1", "Encounter": "encL1"}


@pytest.fixture(scope="module")
def residents(secured: SecuredServer) -> dict[str, str]:
    """The two records stored and matched (each its own resident); record id -> resident id."""
    from rhip.mpi.schema import ensure_schema
    from rhip.mpi.service import match_and_link

    store = secured.app.state.store
    ensure_schema(store.engine)
    found = {}
    for body in linked_resident_records():
        store.update(body["resourceType"], body["id"], body)
        if body["resourceType"] == "Patient":
            found[body["id"]] = match_and_link(store, store.read("Patient", body["id"])).resident_id
    assert found["lp1"] != found["lp2"], "the matcher must not link these two records by itself"
    return found


def _mpi(secured: SecuredServer, path: str, body: dict[str, str]) -> None:
    root = secured.base.removesuffix("/fhir")
    headers = {"Authorization": f"Bearer {secured.tokens['admin']}"}
    response = httpx.post(f"{root}{path}", headers=headers, json=body, timeout=30)
    assert response.status_code == 200, response.text


def _visible(secured: SecuredServer, who: str, records: dict[str, str]) -> set[str]:
    """Which of ``records`` ``who`` can read, checked by instance read and by search (with total)."""
    seen = set()
    for rtype, rid in records.items():
        read = secured.get(who, f"{rtype}/{rid}")
        assert read.status_code in (200, 404), read.text
        found = secured.get(who, rtype, params={"_id": rid})
        assert found.status_code == 200, found.text
        assert (found.json()["total"] == 1) == (read.status_code == 200), (who, rtype, rid)
        if read.status_code == 200:
            seen.add(rid)
    return seen


def test_care_extends_over_the_link_and_stops_at_unlink_and_opt_out(
    secured: SecuredServer, residents: dict[str, str]
) -> None:
    everything_b = {**SHARED_B, **HELD_B}
    assert _visible(secured, "docA", AT_A) == set(AT_A.values())
    assert _visible(secured, "docA", everything_b) == set()  # not linked yet (and the answer is cached)

    _mpi(secured, "/mpi/link", {"record": "Patient/lp2", "resident": f"Patient/{residents['lp1']}"})
    assert _visible(secured, "docA", everything_b) == set(SHARED_B.values())  # the sensitive one stays
    assert _visible(secured, "docB", AT_A) == set(AT_A.values())  # facility B's doctors, the other way
    assert _visible(secured, "docGP", everything_b) == set()  # a link gives nothing to a stranger
    golden = secured.get("docA", f"Patient/{residents['lp1']}")
    assert golden.status_code == 200  # the resident's golden Patient is part of the group
    search = secured.get("docA", "Observation", params={"patient": "Patient/lp2"})
    assert {e["resource"]["id"] for e in search.json().get("entry", [])} == {"obsL2"}

    _mpi(secured, "/mpi/unlink", {"record": "Patient/lp2"})
    assert _visible(secured, "docA", everything_b) == set()

    _mpi(secured, "/mpi/link", {"record": "Patient/lp2", "resident": f"Patient/{residents['lp1']}"})
    assert _visible(secured, "docA", everything_b) == set(SHARED_B.values())
    opt_out = secured.post("admin", "Consent", consent("consentL", "lp1", opt_out=True))
    assert opt_out.status_code == 201, opt_out.text
    assert _visible(secured, "docA", everything_b) == set()  # opted out: B's records stay at B
    assert _visible(secured, "docA", AT_A) == set(AT_A.values())  # A's own records are A's
    assert _visible(secured, "docB", everything_b) == set(everything_b.values())
    assert _visible(secured, "docB", {"Encounter": "encL1"}) == set()
