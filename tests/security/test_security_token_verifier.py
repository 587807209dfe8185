"""Bearer tokens are verified once per token, not once per request, and refused the same way."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from rhip.config import Settings
from rhip.errors import Unauthorized
from rhip.security.keys import KeyRing
from rhip.security.tokens import TokenVerifier, decode_token, issue_token
from rhip.security.users import Account
from rhip_testkit import running_server

ACCOUNT = Account("wang.fang", "person", "practitioner", practitioner_id="d1", organization_id="o1")


def test_verifier_answers_as_decode_token_and_refuses_the_same(tmp_path: Path) -> None:
    """A remembered token answers the same principal; forged, foreign and expired ones are refused."""
    keys = KeyRing(tmp_path / "a")
    verifier = TokenVerifier(keys)
    grant = {"patient": "p1", "reason": "emergency", "until": time.time() + 60}
    token = issue_token(keys, ACCOUNT, "user/*.rs", break_glass=grant)
    assert verifier.verify(token) == decode_token(keys, token) == verifier.verify(token)
    keys.rotate("jwt")
    assert verifier.verify(issue_token(keys, ACCOUNT, "user/*.rs")).sub == "wang.fang"
    head, payload, signature = token.split(".")
    forged = f"{head}.{payload}.{signature[:-4]}AAAA"
    foreign = issue_token(KeyRing(tmp_path / "b"), ACCOUNT, "user/*.rs")
    expired = issue_token(keys, ACCOUNT, "user/*.rs", ttl=-1)
    for bad in (forged, foreign, expired, "not-a-token", "e30.e30.", "🙂.x.y"):
        for _ in range(2):  # a refused token is not remembered: refused again
            with pytest.raises(Unauthorized):
                verifier.verify(bad)


def test_a_remembered_token_expires_on_time(tmp_path: Path) -> None:
    """A token verified while valid is refused once its ``exp`` has passed."""
    keys = KeyRing(tmp_path)
    verifier = TokenVerifier(keys)
    token = issue_token(keys, ACCOUNT, "user/*.rs", ttl=2)
    assert verifier.verify(token).sub == "wang.fang"
    time.sleep(2.1)
    with pytest.raises(Unauthorized):
        verifier.verify(token)
    with pytest.raises(Unauthorized):
        decode_token(keys, token)


def test_the_verifier_keeps_at_most_max_size_tokens(tmp_path: Path) -> None:
    keys = KeyRing(tmp_path)
    verifier = TokenVerifier(keys, max_size=3)
    tokens = [issue_token(keys, ACCOUNT, "user/*.rs") for _ in range(5)]
    for token in tokens:
        verifier.verify(token)
    assert len(verifier._verified) == 3 and set(verifier._verified) == set(tokens[2:])
    assert verifier.verify(tokens[0]).sub == "wang.fang"  # dropped, verified again


def test_the_api_verifies_a_token_once_not_per_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every request parsed and verified its token with PyJWT twice (header, then decode):
    ≈ 0.4 ms of CPU, most of what authentication and audit cost a read."""
    from rhip.api import create_app
    from rhip.security.testing import issue_token as token_for
    from rhip.store import Store

    calls: list[str] = []
    for name in ("decode", "get_unverified_header"):
        real = getattr(jwt, name)

        def counted(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(jwt, name, counted)
    url = f"sqlite:///{tmp_path / 'rhip.sqlite'}"
    store = Store(url)
    try:
        app = create_app(store, Settings(data_dir=tmp_path, database_url=url, auth_enabled=True))
        headers = {"Authorization": f"Bearer {token_for(app, role='platform_admin')}"}
        with running_server(app) as root:
            answers = [httpx.get(f"{root}/fhir/Patient", headers=headers, timeout=30) for _ in range(5)]
            forged = {"Authorization": f"Bearer {issue_token(KeyRing(tmp_path / 'x'), ACCOUNT, 'user/*.rs')}"}
            refused = [httpx.get(f"{root}/fhir/Patient", headers=forged, timeout=30) for _ in range(2)]
    finally:
        store.close()
    assert [a.status_code for a in answers] == [200] * 5
    assert [r.status_code for r in refused] == [401, 401]
    assert calls.count("decode") == 3 and "get_unverified_header" not in calls  # once, then each refusal
