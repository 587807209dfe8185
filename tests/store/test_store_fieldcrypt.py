"""Encryption at rest of citizen IDs and phone numbers, applied by the store on every path.

Every write path (create, update, conditional update, patch, transaction bundle, bulk) must leave
no plaintext citizen ID or phone in any table (bodies, history, every index table); every read
path returns the plaintext; searches by citizen ID and phone still find the record.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from rhip.errors import FieldKeyError
from rhip.fhir.identifiers import make_citizen_id
from rhip.fhir.systems import CITIZEN_ID, CITIZEN_ID_PSEUDONYM, PHONE_PSEUDONYM
from rhip.security.crypto import FieldCipher
from rhip.security.keys import KeyRing
from rhip.store import Store
from rhip.store.fieldcrypt import PLAIN, FieldCrypt
from rhip.store.index_schema import INDEX_TABLES

CIDS = [make_citizen_id("110105", date(1980 + i, 5, 17), 10 + i, "female") for i in range(6)]
PHONES = [f"1380013800{i}" for i in range(6)]
CONTACT_PHONE = "13911112222"


def patient(i: int, res_id: str | None = None) -> dict[str, Any]:
    """A Patient with citizen ID ``CIDS[i]`` and phone ``PHONES[i]``."""
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": CITIZEN_ID, "value": CIDS[i]}, {"system": "urn:mrn", "value": f"mrn-{i}"}],
        "name": [{"family": "王", "given": ["芳"]}],
        "telecom": [
            {"system": "phone", "value": PHONES[i], "use": "mobile"},
            {"system": "email", "value": "a@b.cn"},
        ],
    }
    if res_id is not None:
        body["id"] = res_id
    return body


def observation(res_id: str | None, subject: str) -> dict[str, Any]:
    """A final Observation about ``subject`` (a reference string); no id when ``res_id`` is None."""
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": subject},
    }
    if res_id is not None:
        body["id"] = res_id
    return body


def crypt_for(folder: Path) -> FieldCrypt:
    """Field encryption with the keys of ``folder``."""
    return FieldCrypt(FieldCipher(KeyRing(folder)))


@pytest.fixture
def store(db_url: str, tmp_path: Path) -> Iterator[Store]:
    """An encrypting store whose keys live in tmp_path."""
    s = Store(db_url, fields=crypt_for(tmp_path))
    try:
        yield s
    finally:
        s.close()


def _text(value: Any) -> str:
    if isinstance(value, memoryview):
        value = bytes(value)
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def raw_text(store: Store) -> str:
    """Every row of every table of the store (bodies, history, index tables) as text."""
    parts: list[str] = []
    with store.engine.connect() as conn:
        inspector = sa.inspect(conn)
        for table in inspector.get_table_names():
            columns = [sa.column(c["name"]) for c in inspector.get_columns(table)]
            for row in conn.execute(sa.select(*columns).select_from(sa.table(table))):
                parts.extend(_text(v) for v in row)
    return "\n".join(parts)


def assert_no_plaintext(store: Store, values: list[str]) -> None:
    text = raw_text(store)
    assert "sm4:v" in text  # the check looks at the stored bodies
    leaked = [v for v in values if v in text]
    assert not leaked, f"plaintext at rest: {leaked}"
    with store.engine.connect() as conn:  # SM4 tokens differ per write: indexing them is waste
        for table in INDEX_TABLES:
            for row in conn.execute(sa.select(table)):
                assert not any("sm4:v" in _text(v) for v in row), f"SM4 token indexed in {table.name}: {row}"


def test_every_write_path_leaves_no_plaintext(store: Store) -> None:
    created = store.create(patient(0))
    assert created.resource["identifier"][0]["value"] == CIDS[0]  # the caller sees what it wrote
    store.update("Patient", "p1", patient(1, "p1"))
    store.update("Patient", "p1", {**patient(1, "p1"), "gender": "female"})
    store.conditional_update("Patient", [("identifier", "urn:mrn|mrn-2")], patient(2))
    store.update("Patient", "p3", {"resourceType": "Patient", "id": "p3"})
    store.patch(
        "Patient", "p3", [{"op": "add", "path": "/telecom", "value": [{"system": "sms", "value": PHONES[3]}]}]
    )
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:a",
                "resource": patient(4),
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": observation(None, f"Patient?identifier={CITIZEN_ID}|{CIDS[4]}"),
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    # the conditional reference by citizen ID finds the Patient the same transaction created
    response = store.process_bundle(bundle)
    new_patient = response["entry"][0]["response"]["location"].split("/_history")[0]
    obs_id = response["entry"][1]["response"]["location"].split("/")[1]
    assert store.read("Observation", obs_id)["subject"] == {"reference": new_patient}
    assert response["entry"][0]["resource"]["identifier"][0]["value"] == CIDS[4]
    with_contact = {
        **patient(5, "p5"),
        "contact": [{"telecom": [{"system": "phone", "value": CONTACT_PHONE}]}],
    }
    store.bulk_write(
        [
            with_contact,
            {
                "resourceType": "Practitioner",
                "id": "d1",
                "telecom": [{"system": "phone", "value": "13700001111"}],
            },
        ]
    )
    assert_no_plaintext(store, [*CIDS, *PHONES, CONTACT_PHONE, "13700001111"])
    assert store.read("Patient", "p5")["contact"][0]["telecom"][0]["value"] == CONTACT_PHONE
    assert store.read("Practitioner", "d1")["telecom"][0]["value"] == "13700001111"


def test_reads_return_plaintext(store: Store) -> None:
    store.update("Patient", "p1", patient(1, "p1"))
    store.update("Patient", "p1", {**patient(1, "p1"), "gender": "female"})
    store.update("Observation", "o1", observation("o1", "Patient/p1"))
    expected = patient(1, "p1")["identifier"]
    assert store.read("Patient", "p1")["identifier"] == expected
    assert store.vread("Patient", "p1", 1)["telecom"][0]["value"] == PHONES[1]
    history = store.history("Patient", "p1").entries
    assert [e.body["identifier"] for e in history if e.body] == [expected, expected]
    assert store.search("Patient", [("_id", "p1")]).matches[0]["identifier"] == expected
    included = store.search("Observation", [("_include", "Observation:subject")]).includes
    assert included[0]["identifier"] == expected
    rev = store.search("Patient", [("_id", "p1"), ("_revinclude", "Observation:subject")])
    assert rev.matches[0]["telecom"][0]["value"] == PHONES[1]
    [(body, _, _, _)] = list(store.iter_current("Patient"))
    assert body is not None and body["identifier"] == expected
    response = store.process_bundle(
        {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [{"request": {"method": "GET", "url": "Patient/p1"}}],
        }
    )
    assert response["entry"][0]["resource"]["identifier"] == expected
    # no pseudonym is ever shown
    assert CITIZEN_ID_PSEUDONYM not in str(store.read("Patient", "p1"))


def test_identifier_and_phone_search_find_the_record(store: Store) -> None:
    store.update("Patient", "p1", patient(1, "p1"))
    store.update("Patient", "p2", patient(2, "p2"))
    store.update("Observation", "o1", observation("o1", "Patient/p1"))

    def ids(params: list[tuple[str, str]], res_type: str = "Patient") -> list[str]:
        return sorted(m["id"] for m in store.search(res_type, params, count=10).matches)

    assert ids([("identifier", f"{CITIZEN_ID}|{CIDS[1]}")]) == ["p1"]
    assert ids([("identifier", CIDS[1])]) == ["p1"]
    assert ids([("identifier", f"{CIDS[1]},{CIDS[2]}")]) == ["p1", "p2"]
    assert ids([("identifier", "urn:mrn|mrn-2")]) == ["p2"]  # other identifiers untouched
    assert ids([("phone", PHONES[2])]) == ["p2"]
    assert ids([("telecom", f"phone|{PHONES[1]}")]) == ["p1"]
    assert ids([("telecom", "a@b.cn")]) == ["p1", "p2"]  # email is not encrypted
    assert ids([("patient.identifier", f"{CITIZEN_ID}|{CIDS[1]}")], "Observation") == ["o1"]
    assert store.matching_ids("Patient", [("identifier", CIDS[2])]) == ["p2"]
    again = store.create(patient(2), if_none_exist=[("identifier", f"{CITIZEN_ID}|{CIDS[2]}")])
    assert again.outcome == "existing" and again.res_id == "p2"


def test_bulk_redelivery_is_unchanged(store: Store) -> None:
    records = [patient(i, f"p{i}") for i in range(4)]
    assert store.bulk_write(records).created == 4
    again = store.bulk_write([patient(i, f"p{i}") for i in range(4)])
    assert (again.unchanged, again.updated) == (4, 0)
    changed = store.bulk_write([{**patient(0, "p0"), "gender": "male"}])
    assert changed.updated == 1
    assert store.read("Patient", "p0")["identifier"][0]["value"] == CIDS[0]


def test_other_types_are_not_copied_or_changed(tmp_path: Path) -> None:
    crypt = crypt_for(tmp_path)
    obs = {"resourceType": "Observation", "identifier": [{"system": CITIZEN_ID, "value": CIDS[0]}]}
    assert crypt.protect(obs) is obs
    assert crypt.reveal(obs) is obs
    plain = patient(0)
    assert crypt.reveal(plain) is plain  # nothing encrypted: no copy
    assert crypt.protect(plain) is not plain and plain == patient(0)  # the caller's dict is untouched


def test_search_rewrite_is_additive_for_identifiers(tmp_path: Path) -> None:
    crypt = crypt_for(tmp_path)
    crypt.protect(patient(0))  # creates the keys
    [(name, value)] = crypt.search_params("Patient", [("identifier", CIDS[0])])
    assert name == "identifier" and value.startswith(f"{CIDS[0]},{CITIZEN_ID_PSEUDONYM}|")
    [(name, value)] = crypt.search_params("Patient", [("phone", PHONES[0])])
    assert name == "identifier" and value.startswith(f"{PHONE_PSEUDONYM}|")
    assert crypt.search_params("Patient", [("identifier", "not-a-citizen-id")]) == [
        ("identifier", "not-a-citizen-id")
    ]
    assert crypt.search_params("Observation", [("code", CIDS[0])]) == [("code", CIDS[0])]
    assert PLAIN.search_params("Patient", [("phone", PHONES[0])]) == [("phone", PHONES[0])]


def test_wrong_or_missing_key_gives_a_clear_error(db_url: str, tmp_path: Path) -> None:
    with Store(db_url, fields=crypt_for(tmp_path / "a")) as writer:
        writer.update("Patient", "p1", patient(1, "p1"))
    with Store(db_url, fields=crypt_for(tmp_path / "b"), migrate=False) as other:
        other.fields.protect(patient(2))  # keys of its own, version 1 like the writer's
        with pytest.raises(FieldKeyError, match=r"Patient/p1: .*cannot be decrypted.*RHIP_DATA_DIR") as info:
            other.read("Patient", "p1")
        assert CIDS[1] not in str(info.value) and info.value.status == 500
    keyless = Store(db_url, fields=crypt_for(tmp_path / "empty"), migrate=False)
    with keyless, pytest.raises(FieldKeyError, match="key version 1 not found"):
        keyless.search("Patient", [])
