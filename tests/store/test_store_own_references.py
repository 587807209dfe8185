"""References written as absolute URLs of this server index and search as local ones."""

from __future__ import annotations

import pytest
from test_store_fieldcrypt import observation

from rhip.store import Store

OWN_FHIR_BASE = "http://127.0.0.1:8080/fhir"  # RHIP_BASE_URL's default, and the API's FHIR base


def _ids(store: Store, params: list[tuple[str, str]]) -> list[str]:
    return sorted(m["id"] for m in store.search("Observation", params).matches)


@pytest.mark.parametrize("subject", [f"{OWN_FHIR_BASE}/Patient/p1", "http://127.0.0.1:8080/Patient/p1"])
def test_absolute_reference_to_this_server_is_local(db_url: str, subject: str) -> None:
    """Regression: ``<RHIP_BASE_URL>/fhir/Patient/1`` was indexed as an outside URL with no type or id."""
    store = Store(db_url)
    store.update("Observation", "abs", observation("abs", subject))
    store.update("Observation", "other", observation("other", "https://elsewhere.example/fhir/Patient/p1"))
    assert _ids(store, [("subject", "Patient/p1")]) == ["abs"]
    assert _ids(store, [("patient", "p1")]) == ["abs"]
    assert _ids(store, [("subject", f"{OWN_FHIR_BASE}/Patient/p1")]) == ["abs"]
    assert _ids(store, [("subject", "https://elsewhere.example/fhir/Patient/p1")]) == ["other"]
    store.close()
