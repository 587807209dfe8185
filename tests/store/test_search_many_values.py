"""A parameter with hundreds of comma-separated values searches like one with a few.

Regression: SQLite refuses an expression tree deeper than 1,000 and a flat OR chain of ≈ 500
values was that deep, so such a search failed with a 500; a practitioner's consent look-up for a
page of residents (``Consent?patient=`` with 500 ids) hit it in the demo region.
"""

from __future__ import annotations

from rhip.store import Store


def _observation(oid: str, patient: str, code: str) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": "2026-01-01T08:00:00+08:00",
    }


def test_hundreds_of_values_per_parameter(db_url: str) -> None:
    store = Store(db_url)
    try:
        store.update("Observation", "o1", _observation("o1", "p1", "718-7"))
        store.update("Observation", "o2", _observation("o2", "p777", "2345-7"))
        store.update("Observation", "o3", _observation("o3", "other", "1-1"))
        patients = ",".join(f"p{i}" for i in range(2_000))
        found = store.search("Observation", [("subject", patients), ("_sort", "_id")])
        assert [r["id"] for r in found.matches] == ["o1", "o2"]
        codes = ",".join(["http://loinc.org|718-7", *(f"http://loinc.org|9{i}-0" for i in range(1_500))])
        assert [r["id"] for r in store.search("Observation", [("code", codes)]).matches] == ["o1"]
        ids = ",".join(["o3", *(f"x{i}" for i in range(1_500))])
        assert [r["id"] for r in store.search("Observation", [("_id", ids)]).matches] == ["o3"]
    finally:
        store.close()
