"""The per-request work of authentication: decisions made once per role and scopes, two headers read."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from rhip.api.access import new_request_id
from rhip.errors import Forbidden
from rhip.security.middleware import _credentials
from rhip.security.policy import ROLES, check_interaction, interaction_refusal
from rhip.security.tokens import Principal

INTERACTIONS = ("read", "create", "update", "delete", "search-type", "batch", "history-type", "capabilities")
TYPES = ("Patient", "Observation", "Organization", "Consent", "AuditEvent", "Nonsense", None)


def _decision(principal: Principal, interaction: str, res_type: str | None) -> str | None:
    try:
        check_interaction(principal, interaction, res_type)
    except Forbidden as exc:
        return exc.diagnostics
    return None


def test_a_decision_is_kept_per_role_scope_interaction_and_type() -> None:
    """Asked again, every role answers the same; a narrower scope of the same role is not served
    the decision of a wider one, whichever is asked first."""
    scopes = ("system/*.cruds", "system/Patient.r", "user/Observation.rs", "openid", "")
    first = {}
    for role in (*ROLES, "intruder"):
        for scope in scopes:
            principal = Principal(sub="s", role=role, scope=scope)
            for interaction in INTERACTIONS:
                for res_type in TYPES:
                    first[role, scope, interaction, res_type] = _decision(principal, interaction, res_type)
    hits = interaction_refusal.cache_info().hits
    for (role, scope, interaction, res_type), decision in reversed(first.items()):
        assert _decision(Principal(sub="t", role=role, scope=scope), interaction, res_type) == decision
    assert interaction_refusal.cache_info().hits > hits  # answered from the kept decisions
    narrow = Principal(sub="s", role="system", scope="system/Patient.r")
    wide = Principal(sub="s", role="system", scope="system/*.cruds")
    assert _decision(wide, "create", "Patient") is None
    assert _decision(narrow, "create", "Patient") == "token scope does not grant 'c' on Patient"
    assert _decision(narrow, "read", "Patient") is None
    unknown = first["intruder", "system/*.cruds", "read", "Patient"]
    assert unknown == "role 'intruder' is not known to this server"
    assert interaction_refusal.cache_info().maxsize is not None  # bounded: callers choose type names


def test_a_new_request_id_is_a_uuid4_in_hex() -> None:
    made = {new_request_id() for _ in range(2000)}
    assert len(made) == 2000
    for text in list(made)[:200]:
        parsed = uuid.UUID(text)
        assert parsed.hex == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_only_the_authorization_and_request_id_headers_are_read() -> None:
    """Names in any case; the last of repeated headers wins; absent ones give "" and None."""
    headers = [
        (b"host", b"x"),
        (b"Authorization", b"Bearer first"),
        (b"x-request-id", b"r-1"),
        (b"authorization", b"Bearer second"),
        (b"X-Request-ID", b"r-2"),
        (b"authorization-extra", b"no"),
    ]
    assert _credentials({"headers": headers}) == ("Bearer second", "r-2")
    assert _credentials({"headers": [(b"host", b"x")]}) == ("", None)
    assert _credentials({}) == ("", None)


@pytest.mark.parametrize("sent", ["req-abc-123", None])
def test_the_request_id_reaches_the_audit_chain(secured: Any, sent: str | None) -> None:
    """The caller's X-Request-ID is the audited request id; without one the server makes one."""
    from rhip.security.audit import events_for_patient

    made = secured.post("admin", "Patient", {"resourceType": "Patient"})
    extra = {"X-Request-ID": sent} if sent else {}
    read = secured.get("admin", f"Patient/{made.json()['id']}", headers=extra)
    runtime = secured.app.state.security
    runtime.writer.flush()
    _, rows = events_for_patient(runtime.store.engine, made.json()["id"])
    assert read.status_code == 200
    reads = [entry for _, entry in rows if entry["action"] == "read"]
    assert len(reads) == 1
    if sent:
        assert reads[0]["request_id"] == sent
    else:
        assert uuid.UUID(reads[0]["request_id"]).version == 4
