"""Key rotation and re-encryption of stored person resources (rhip.store.reencrypt)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_store_fieldcrypt import CIDS, PHONES, crypt_for, patient, raw_text

from rhip.errors import InvalidRequest
from rhip.fhir.systems import CITIZEN_ID
from rhip.security.crypto import FieldCipher
from rhip.security.keys import KeyRing
from rhip.security.rotation import KeyUsage
from rhip.store import Store
from rhip.store.fieldcrypt import PLAIN, FieldCrypt
from rhip.store.reencrypt import fhir_key_usage, reencrypt, rows_to_examine


def _ids(store: Store, params: list[tuple[str, str]]) -> list[str]:
    return sorted(m["id"] for m in store.search("Patient", params, count=20).matches)


def test_rotation_keeps_old_data_readable_and_reencrypt_moves_it(db_url: str, tmp_path: Path) -> None:
    store = Store(db_url, fields=crypt_for(tmp_path))
    for i in range(3):
        store.update("Patient", f"p{i}", patient(i, f"p{i}"))
    store.update("Patient", "p0", {**patient(0, "p0"), "gender": "female"})  # a history version
    ring = KeyRing(tmp_path)
    assert (ring.rotate("sm4"), ring.rotate("hmac")) == (2, 2)
    store = Store(db_url, fields=crypt_for(tmp_path), migrate=False)  # as a restarted server would
    assert store.read("Patient", "p1")["identifier"][0]["value"] == CIDS[1]  # under key 1 still
    store.update("Patient", "p3", patient(3, "p3"))  # written under key 2
    assert "sm4:v1:" in raw_text(store) and "sm4:v2:" in raw_text(store)
    assert rows_to_examine(store) == 4 + 5
    seen: list[int] = []
    result = reencrypt(store, batch_size=2, on_rows=seen.append)
    assert (result.current, result.versions, result.skipped) == (3, 4, 2)
    assert sum(seen) == 9
    text = raw_text(store)
    assert "sm4:v1:" not in text and not [v for v in [*CIDS, *PHONES] if v in text]
    assert store.vread("Patient", "p0", 1)["identifier"][0]["value"] == CIDS[0]
    assert _ids(store, [("identifier", f"{CITIZEN_ID}|{CIDS[2]}")]) == ["p2"]
    assert _ids(store, [("phone", PHONES[0])]) == ["p0"]
    again = reencrypt(store)
    assert (again.current, again.versions, again.skipped) == (0, 0, 9)
    store.close()


def test_plaintext_rows_written_before_encryption_read_and_get_protected(db_url: str, tmp_path: Path) -> None:
    with Store(db_url, fields=PLAIN) as before:
        before.update("Patient", "p1", patient(1, "p1"))
        before.update("Patient", "p2", patient(2, "p2"))
        assert CIDS[1] in raw_text(before)
    store = Store(db_url, fields=crypt_for(tmp_path), migrate=False)
    assert store.read("Patient", "p1")["identifier"][0]["value"] == CIDS[1]
    assert _ids(store, [("identifier", CIDS[1])]) == ["p1"]  # the plain index row still answers
    store.update("Patient", "p2", {**patient(2, "p2"), "gender": "male"})  # a new version, encrypted
    result = reencrypt(store)
    assert (result.current, result.versions) == (1, 2)  # p1 current; p1 v1 and p2 v1 in history
    text = raw_text(store)
    assert not [v for v in [*CIDS, *PHONES] if v in text]
    assert _ids(store, [("identifier", CIDS[1])]) == ["p1"]
    assert _ids(store, [("phone", PHONES[1])]) == ["p1"]
    assert [e.body["telecom"][0]["value"] for e in store.history("Patient", "p2").entries if e.body] == [
        PHONES[2],
        PHONES[2],
    ]
    store.close()


def test_reencrypt_refuses_when_encryption_is_off(db_url: str, tmp_path: Path) -> None:
    off = FieldCrypt(FieldCipher(KeyRing(tmp_path)), protect_writes=False)
    with Store(db_url, fields=off) as store, pytest.raises(InvalidRequest, match="RHIP_FIELD_ENCRYPTION"):
        reencrypt(store)


def test_hmac_rotation_alone_is_found_without_force(db_url: str, tmp_path: Path) -> None:
    store = Store(db_url, fields=crypt_for(tmp_path))
    for i in range(3):
        store.update("Patient", f"p{i}", patient(i, f"p{i}"))
    store.close()
    assert KeyRing(tmp_path).rotate("hmac") == 2
    store = Store(db_url, fields=crypt_for(tmp_path), migrate=False)
    first = reencrypt(store, batch_size=2)
    assert (first.current, first.versions, first.skipped) == (
        3,
        3,
        0,
    )  # the SM4 tokens alone say v1 is current
    again = reencrypt(store)
    assert (again.current, again.versions, again.skipped) == (0, 0, 6)
    usage = KeyUsage()
    fhir_key_usage(store, usage)
    assert [usage.rows("hmac", place, 1) for place in ("fhir_current", "fhir_history")] == [0, 0]
    assert [usage.rows("hmac", place, 2) for place in ("fhir_current", "fhir_history")] == [3, 3]
    assert _ids(store, [("phone", PHONES[1])]) == ["p1"]
    store.close()


def test_key_usage_counts_versions_and_values_in_clear(db_url: str, tmp_path: Path) -> None:
    with Store(db_url, fields=PLAIN) as before:
        before.update("Patient", "p0", patient(0, "p0"))  # in clear
    store = Store(db_url, fields=crypt_for(tmp_path), migrate=False)
    store.update("Patient", "p1", patient(1, "p1"))  # sm4 v1, hmac v1
    store.close()
    ring = KeyRing(tmp_path)
    ring.rotate("sm4")
    store = Store(db_url, fields=crypt_for(tmp_path), migrate=False)
    store.update("Patient", "p1", {**patient(1, "p1"), "gender": "female"})  # sm4 v2, hmac v1
    usage = KeyUsage()
    fhir_key_usage(store, usage)
    assert {v: usage.rows("sm4", "fhir_current", v) for v in (None, 1, 2)} == {None: 1, 1: 0, 2: 1}
    assert {v: usage.rows("sm4", "fhir_history", v) for v in (None, 1, 2)} == {None: 1, 1: 1, 2: 1}
    assert usage.rows("hmac", "fhir_current", 1) == 1 and usage.versions("hmac") == {1}
    ring.rotate("hmac")
    (tmp_path / "keys" / "hmac" / "v1.key").unlink()  # archived too early: its pseudonyms are unknown
    store.close()
    lost = KeyUsage()
    with Store(db_url, fields=crypt_for(tmp_path), migrate=False) as without_v1:
        fhir_key_usage(without_v1, lost)
    assert lost.versions("hmac") == {None}
