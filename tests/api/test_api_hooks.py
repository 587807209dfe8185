"""Extension points: the policy hooks every interaction passes, contributed routers, $everything."""

from __future__ import annotations

import json

import pytest
from api_testkit import assert_outcome, patient, post

from rhip.api import access
from rhip.errors import Forbidden


def test_policy_hooks_see_every_interaction(client, monkeypatch):
    calls = []
    audits = []

    def authorize(ctx, interaction, res_type, res_id=None, resource=None):
        calls.append((interaction, res_type))
        if interaction == "delete":
            raise Forbidden("deletes are not allowed for this role")

    def filter_results(ctx, resources):
        return [r for r in resources if r.get("gender") != "male"]

    monkeypatch.setattr(access, "authorize", authorize)
    monkeypatch.setattr(access, "filter_results", filter_results)
    monkeypatch.setattr(
        access, "audit", lambda ctx, interaction, outcome, entities=(): audits.append((interaction, outcome))
    )
    hidden = post(client, "/fhir/Patient", patient(gender="male")).json()["id"]
    shown = post(client, "/fhir/Patient", patient()).json()["id"]
    assert_outcome(client.get(f"/fhir/Patient/{hidden}"), 404)
    assert client.get(f"/fhir/Patient/{shown}").status_code == 200
    found = client.get("/fhir/Patient").json()
    assert [e["resource"]["id"] for e in found["entry"]] == [shown]
    history = client.get("/fhir/Patient/_history").json()
    assert [e["resource"]["id"] for e in history["entry"]] == [shown]
    assert_outcome(client.delete(f"/fhir/Patient/{shown}"), 403, "forbidden")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": f"Patient/{shown}"}}],
    }
    assert_outcome(post(client, "/fhir", bundle), 403)
    assert client.get(f"/fhir/Patient/{shown}").status_code == 200
    assert ("create", "Patient") in calls
    assert ("read", "Patient") in calls
    assert ("search-type", "Patient") in calls
    assert ("transaction", None) in calls
    assert ("create", "0") in audits
    assert ("delete", "4") in audits


def test_contributed_routers_are_included(tmp_path):
    import api_extra_router
    from fastapi.testclient import TestClient

    from rhip.api import create_app
    from rhip.config import Settings
    from rhip.store import Store

    store = Store(f"sqlite:///{tmp_path / 'r.sqlite'}")
    app = create_app(
        store, Settings(data_dir=tmp_path), router_modules=("api_extra_router", "rhip.not_a_module.api")
    )
    assert app.state.contributed == ["api_extra_router"]
    assert api_extra_router.SETUP_CALLS
    with TestClient(app) as test_client:
        assert test_client.get("/extra/ping").json() == {"pong": "yes"}
        assert test_client.get("/fhir/$ping").json() == {"resourceType": "Parameters"}
        assert test_client.get("/fhir/metadata").status_code == 200
    store.close()


def test_everything_collects_compartment_and_references(client):
    org = post(client, "/fhir/Organization", {"resourceType": "Organization", "name": "Clinic"}).json()["id"]
    pid = post(
        client, "/fhir/Patient", patient(managingOrganization={"reference": f"Organization/{org}"})
    ).json()["id"]
    other = post(client, "/fhir/Patient", patient(family="Other")).json()["id"]
    for subject in (pid, pid, other):
        post(
            client,
            "/fhir/Observation",
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "x"},
                "subject": {"reference": f"Patient/{subject}"},
            },
        )
    post(client, "/fhir/Condition", {"resourceType": "Condition", "subject": {"reference": f"Patient/{pid}"}})
    result = client.get(f"/fhir/Patient/{pid}/$everything").json()
    types = sorted(e["resource"]["resourceType"] for e in result["entry"])
    assert types == ["Condition", "Observation", "Observation", "Organization", "Patient"]
    assert result["total"] == 5
    only = client.get(f"/fhir/Patient/{pid}/$everything", params={"_type": "Observation"}).json()
    assert sorted(e["resource"]["resourceType"] for e in only["entry"]) == [
        "Observation",
        "Observation",
        "Patient",
    ]
    paged = client.get(f"/fhir/Patient/{pid}/$everything", params={"_count": "2"}).json()
    assert len(paged["entry"]) == 2
    assert any(link["relation"] == "next" for link in paged["link"])
    later = client.get(f"/fhir/Patient/{pid}/$everything", params={"_since": "2100-01-01T00:00:00Z"}).json()
    assert later["total"] == 1
    body = {"resourceType": "Parameters", "parameter": [{"name": "_type", "valueString": "Condition"}]}
    posted = client.post(f"/fhir/Patient/{pid}/$everything", content=json.dumps(body)).json()
    assert posted["total"] == 2
    assert_outcome(client.get("/fhir/Patient/nobody/$everything"), 404)
    assert_outcome(client.get(f"/fhir/Patient/{pid}/$everything", params={"_type": "Nope"}), 404)
    assert_outcome(client.get(f"/fhir/Patient/{pid}/$everything", params={"colour": "red"}), 400)


@pytest.mark.parametrize(
    "summary,kept",
    [("true", {"name", "gender", "birthDate"}), ("text", set()), ("data", {"name", "gender", "birthDate"})],
)
def test_summary_and_elements_on_read(client, summary, kept):
    pid = post(
        client,
        "/fhir/Patient",
        patient(text={"status": "generated", "div": "<div>x</div>"}, photo=[{"contentType": "image/png"}]),
    ).json()["id"]
    body = client.get(f"/fhir/Patient/{pid}", params={"_summary": summary}).json()
    assert kept <= set(body)
    assert ("photo" in body) == (summary == "data")
    assert ("text" in body) == (summary == "text")
    assert any(t["code"] == "SUBSETTED" for t in body["meta"]["tag"])
    elements = client.get(f"/fhir/Patient/{pid}", params={"_elements": "birthDate"}).json()
    assert set(elements) == {"resourceType", "id", "meta", "birthDate"}


def test_unexpected_errors_answer_500_outcome_without_details(client, monkeypatch, caplog):
    """The catch-all: an unexpected exception is logged and answered as a 500 OperationOutcome."""

    def broken(ctx, interaction, res_type, res_id=None, resource=None):
        raise RuntimeError("secret detail 330106198005170027")

    monkeypatch.setattr(access, "authorize", broken)
    response = client.get("/fhir/Patient/abc")
    body = assert_outcome(response, 500, "exception")
    assert "330106198005170027" not in response.text
    assert body["issue"][0]["diagnostics"].startswith("internal server error")
    assert any("unhandled error" in r.getMessage() for r in caplog.records)


def test_started_app_keeps_its_long_lived_objects_out_of_the_collector(client):
    """While the app runs, what existed at start-up is frozen (no full collection walks it again)."""
    import gc

    assert gc.get_freeze_count() > 0
    assert client.get("/fhir/metadata").status_code == 200


def test_stopped_app_hands_its_objects_back_to_the_collector(db_url, tmp_path):
    import gc

    from fastapi.testclient import TestClient

    from rhip.api import create_app
    from rhip.config import Settings

    settings = Settings(data_dir=tmp_path, database_url=db_url, auth_enabled=False)
    with TestClient(create_app(settings=settings, router_modules=())):
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
