"""Pure parts of the policy: data levels, sensitive categories, consent parsing, SMART scopes, tokens."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from security_seed import consent

from rhip.errors import Unauthorized
from rhip.security.keys import KeyRing
from rhip.security.levels import data_level, sensitive_categories, type_level
from rhip.security.relations import parse_consent
from rhip.security.scopes import narrow, parse_scope, parse_scopes, scopes_allow
from rhip.security.tokens import decode_token, issue_token
from rhip.security.users import Account, check_secret, hash_secret


def _condition(code: str) -> dict[str, object]:
    return {
        "resourceType": "Condition",
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": code}]},
    }


def test_levels_follow_gbt39725_grading() -> None:
    assert type_level("CodeSystem") == 1
    assert type_level("Organization") == 2
    assert type_level("Patient") == 3
    assert type_level("Observation") == 4
    assert data_level(_condition("J18.9")) == 4
    assert data_level(_condition("F32.9")) == 5
    assert sensitive_categories(_condition("B20")) == {"hiv"}
    assert sensitive_categories(_condition("A53.9")) == {"std"}
    assert sensitive_categories(_condition("O80")) == {"reproductive"}
    labelled = {"resourceType": "Observation", "meta": {"security": [{"code": "PSY"}]}}
    assert sensitive_categories(labelled) == {"mental"}


def test_consent_parsing() -> None:
    assert parse_consent([consent("a", "p", opt_out=True)]).opt_out_sharing
    state = parse_consent([consent("b", "p", deny_labels=("PSY", "HIV"))])
    assert not state.opt_out_sharing and state.restricted == {"mental", "hiv"}
    inactive = {**consent("c", "p", opt_out=True), "status": "inactive"}
    assert not parse_consent([inactive]).opt_out_sharing


def test_smart_v2_and_v1_scopes() -> None:
    scopes = parse_scopes("openid patient/Observation.rs user/*.read system/Patient.cud")
    assert scopes_allow(scopes, "Observation", "s")
    assert not scopes_allow(scopes, "Observation", "c")
    assert scopes_allow(scopes, "Condition", "r")  # user/*.read == rs
    assert scopes_allow(scopes, "Patient", "d")
    assert parse_scope("patient/*.xyz") is None
    assert (
        narrow("patient/Observation.rs patient/Observation.d openid", "patient/*.rs")
        == "patient/Observation.rs openid"
    )
    assert narrow(None, "user/*.cruds") == "user/*.cruds"


def test_tokens_survive_key_rotation_and_expire(tmp_path: Path) -> None:
    keys = KeyRing(tmp_path)
    account = Account("wang.fang", "person", "practitioner", practitioner_id="d1", organization_id="o1")
    old = issue_token(keys, account, "user/*.rs")
    keys.rotate("jwt")
    new = issue_token(keys, account, "user/*.rs")
    assert decode_token(keys, old).organization == "o1"
    assert decode_token(keys, new).sub == "wang.fang"
    expired = issue_token(keys, account, "user/*.rs", ttl=-1)
    with pytest.raises(Unauthorized):
        decode_token(keys, expired)
    with pytest.raises(Unauthorized):
        decode_token(KeyRing(tmp_path / "other"), new)
    grant = {"patient": "p1", "reason": "emergency", "until": time.time() + 60}
    principal = decode_token(keys, issue_token(keys, account, "user/*.rs", break_glass=grant))
    assert principal.glass_for("p1") and not principal.glass_for("p2")


def test_secrets_are_hashed() -> None:
    stored = hash_secret("correct horse")
    assert "correct horse" not in stored and stored.startswith("scrypt$")
    assert check_secret("correct horse", stored)
    assert not check_secret("correct hors", stored)


def test_addressee_elements_are_r4_references_to_organizations() -> None:
    """Each element the facility write rule reads as a request's addressee is an R4 element that
    may reference an Organization, and the parties of a referral split as FHIR R4 means them."""
    from rhip.fhir.model import load_model
    from rhip.security.parties import ADDRESSEE_ELEMENTS, parties_of

    model = load_model()
    for res_type, paths in ADDRESSEE_ELEMENTS.items():
        for path in paths:
            table = model.types[res_type]
            *parents, name = path.split(".")
            for parent in parents:
                nested = table.props[parent].table
                assert nested is not None, (res_type, path)
                table = nested
            prop = table.props[name]
            assert prop.type_name == "Reference" and "Organization" in (prop.targets or ()), (res_type, path)
    referral = {
        "resourceType": "ServiceRequest",
        "requester": {"reference": "Organization/a"},
        "performer": [{"reference": "Organization/b"}, {"reference": "Practitioner/x"}],
        "encounter": {"reference": "Encounter/e1"},
    }
    parties = parties_of(referral)
    assert (parties.owners, parties.addressees, parties.encounter) == ({"a"}, {"b"}, "e1")
    result = {"resourceType": "Observation", "performer": [{"reference": "Organization/b"}]}
    assert parties_of(result).owners == {"b"} and not parties_of(result).addressees
