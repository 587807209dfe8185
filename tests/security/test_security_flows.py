"""Flows over real HTTP: password and client-credentials logins, consent changes taking effect,
break-the-glass, and a resident's true "who read my records" answer from the audit chain."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

import httpx
import pytest
from security_seed import consent

from rhip.security.audit import verify_chain
from rhip.security.users import Account, create_account
from rhip.store.meta import parse_instant

if TYPE_CHECKING:  # the fixture's type only; importing conftest by name is ambiguous across folders
    from conftest import SecuredServer

pytestmark = pytest.mark.xdist_group("security_flows")


def _root(secured: SecuredServer) -> str:
    return secured.base.removesuffix("/fhir")


def test_token_endpoint_password_and_client_credentials(secured: SecuredServer) -> None:
    engine = secured.app.state.store.engine
    create_account(engine, Account("li.lei", "person", "resident", patient_id="pat1"), "s3cret-pw")
    create_account(engine, Account("his-a", "system", "system", organization_id="orgA"), "client-secret")
    root = _root(secured)
    ok = httpx.post(
        f"{root}/auth/token", data={"grant_type": "password", "username": "li.lei", "password": "s3cret-pw"}
    )
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert body["token_type"] == "Bearer" and body["patient"] == "pat1" and "patient/*.rs" in body["scope"]
    mine = httpx.get(
        f"{secured.base}/Patient/pat1", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert mine.status_code == 200
    bad = httpx.post(
        f"{root}/auth/token", data={"grant_type": "password", "username": "li.lei", "password": "nope"}
    )
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_grant"
    system = httpx.post(
        f"{root}/auth/token",
        data={"grant_type": "client_credentials", "scope": "system/Patient.rs"},
        auth=("his-a", "client-secret"),
    )
    assert system.status_code == 200 and system.json()["scope"] == "system/Patient.rs"
    token = system.json()["access_token"]
    assert (
        httpx.get(f"{secured.base}/Patient", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    )
    assert (
        httpx.get(f"{secured.base}/Observation", headers={"Authorization": f"Bearer {token}"}).status_code
        == 403
    )
    smart = httpx.get(f"{secured.base}/.well-known/smart-configuration").json()
    assert smart["token_endpoint"].endswith("/auth/token")


def test_consent_restriction_applies_at_read_time(secured: SecuredServer) -> None:
    assert secured.get("docB", "Condition/cond1").status_code == 200
    created = secured.post("resident1", "Consent", consent("c-pat1", "pat1", deny_labels=("PSY",)))
    assert created.status_code == 201, created.text
    assert secured.get("docB", "Condition/cond1").status_code == 404
    assert secured.get("docB", "Condition", params={"_summary": "count"}).json()["total"] == 1  # cond2 only
    assert secured.get("resident1", "Condition/cond1").status_code == 200  # own records stay visible
    other = secured.post("resident1", "Consent", consent("c-pat2", "pat2", opt_out=True))
    assert other.status_code == 403


def test_break_the_glass(secured: SecuredServer) -> None:
    root = _root(secured)
    assert secured.get("docB", "Condition/cond3").status_code in (403, 404)
    short = httpx.post(
        f"{root}/auth/break-glass",
        data={"patient": "pat3", "reason": "x"},
        headers={"Authorization": f"Bearer {secured.tokens['docB']}"},
    )
    assert short.status_code == 400
    grant = httpx.post(
        f"{root}/auth/break-glass",
        data={"patient": "pat3", "reason": "unconscious in emergency room, allergy history needed"},
        headers={"Authorization": f"Bearer {secured.tokens['docB']}"},
    )
    assert grant.status_code == 200, grant.text
    token = grant.json()["access_token"]
    until = grant.json()["break_glass"]["until"]  # an instant, as everywhere else in the API
    assert isinstance(until, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", until)
    assert 0 < parse_instant(until) - time.time() <= 3600
    seen = httpx.get(f"{secured.base}/Condition/cond3", headers={"Authorization": f"Bearer {token}"})
    assert seen.status_code == 200
    other = httpx.get(f"{secured.base}/Observation/obs4", headers={"Authorization": f"Bearer {token}"})
    assert other.status_code == 404  # the grant covers one resident only
    nurse = httpx.post(
        f"{root}/auth/break-glass",
        data={"patient": "pat3", "reason": "curious about this one"},
        headers={"Authorization": f"Bearer {secured.tokens['insurance']}"},
    )
    assert nurse.status_code == 403
    secured.app.state.security.writer.flush()
    from rhip.security.audit import iter_entries

    flagged = [e for _, e in iter_entries(secured.app.state.store.engine, break_glass_only=True)]
    assert any(e["action"] == "break-glass" and e["patients"] == ["pat3"] for e in flagged)
    assert any(e["action"] == "read" and "Condition/cond3" in e["entities"] for e in flagged)


def test_who_read_my_records_is_true(secured: SecuredServer) -> None:
    assert secured.get("docA", "Observation/obs1").status_code == 200
    assert secured.get("docA", "Observation", params={"patient": "pat1"}).status_code == 200
    assert secured.get("insurance", "Patient/pat1").status_code == 200
    assert secured.get("docGP", "Observation/obs1").status_code == 404  # denied attempts are recorded too
    response = secured.get("resident1", "AuditEvent", params={"entity": "Patient/pat1", "_count": "200"})
    assert response.status_code == 200, response.text
    events = [e["resource"] for e in response.json()["entry"]]
    actors = {
        (e["agent"][0]["who"]["identifier"]["value"], e["subtype"][0]["code"], e["outcome"]) for e in events
    }
    assert ("docA", "read", "0") in actors
    assert ("docA", "search-type", "0") in actors
    assert ("insurance", "read", "0") in actors
    assert ("docGP", "read", "4") in actors  # the refused attempt is shown too
    assert all("Patient/pat1" in {x["what"]["reference"] for x in e["entity"]} for e in events)
    # nobody else's events, and a resident cannot look at another resident's log
    assert secured.get("resident1", "AuditEvent", params={"entity": "Patient/pat2"}).status_code == 403
    assert secured.get("docA", "AuditEvent", params={"entity": "Patient/pat1"}).status_code == 403
    assert verify_chain(secured.app.state.store.engine).ok


def test_public_health_officers_read_surveillance_alerts(secured: SecuredServer) -> None:
    """The gate let public_health into /surveillance/, then the policy refused every call with
    'role public_health may not access SurveillanceAlert'."""
    root = _root(secured)
    headers = {"Authorization": f"Bearer {secured.tokens['ph']}"}
    for path in ("/surveillance/methods", "/surveillance/alerts", "/surveillance/case-definitions"):
        response = httpx.get(f"{root}{path}", headers=headers)
        assert response.status_code == 200, (path, response.text)
    assert httpx.get(f"{root}/surveillance/alerts/nope", headers=headers).status_code == 404
    refused = httpx.put(f"{root}/surveillance/case-definitions/ili", headers=headers, json={"icd10": ["J11"]})
    assert (
        refused.status_code == 403
    )  # officers acknowledge and close alerts; case definitions are the platform's


def test_back_office_routes_are_gated_and_audited(secured: SecuredServer) -> None:
    root = _root(secured)
    for path in ("/mpi/resident", "/mpi/review", "/ingest/batches", "/quality/rules", "/surveillance/alerts"):
        for who in ("resident1", "docA", "researcher"):
            if (who, path) == ("docA", "/mpi/resident"):
                continue  # practitioners may use the MPI's filtered resident reads
            response = httpx.get(f"{root}{path}", headers={"Authorization": f"Bearer {secured.tokens[who]}"})
            assert response.status_code == 403, (who, path, response.status_code)
        assert httpx.get(f"{root}{path}").status_code == 401
    allowed = httpx.get(
        f"{root}/quality/rules", headers={"Authorization": f"Bearer {secured.tokens['admin']}"}
    )
    assert allowed.status_code not in (401, 403)
    secured.app.state.security.writer.flush()
    from rhip.security.audit import iter_entries

    entries = [e for _, e in iter_entries(secured.app.state.store.engine)]
    assert any(e["action"] == "GET /quality/rules" and e["actor"] == "admin" for e in entries)
    assert any(e["action"] == "access" and e["actor"] == "resident1" and e["outcome"] == "4" for e in entries)
