"""Shared data and helpers of the search tests: a small hand-built region loaded into a real store.

``search_store`` yields a Store (SQLite file or a brand-new PostgreSQL database, dropped after)
holding the resources of :func:`dataset`; ``ids`` runs a search and returns the matched ids.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from rhip_testkit import new_pg_database

CID = "urn:oid:2.16.156.10011.1.3"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@contextmanager
def database(backend: str, tmp: Path) -> Iterator[str]:
    """A SQLAlchemy URL of an empty database of ``backend``; PostgreSQL databases are dropped after."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp / 'search.sqlite'}"
        return
    with new_pg_database("rhip_search") as url:
        yield url


def _obs(oid: str, subject: dict[str, Any] | None, code: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "id": oid,
        "status": extra.pop("status", "final"),
        "code": {"coding": [{"system": LOINC, "code": code, "display": extra.pop("display", code)}]},
    }
    if subject is not None:
        body["subject"] = subject
    body.update(extra)
    return body


def _qty(value: float, code: str) -> dict[str, Any]:
    return {"value": value, "unit": code, "system": UCUM, "code": code}


def dataset() -> list[dict[str, Any]]:
    """The hand-built resources every search test runs against."""
    org = {"resourceType": "Organization", "id": "org1", "name": "First People's Hospital"}
    p1 = {
        "resourceType": "Patient",
        "id": "p1",
        "meta": {"tag": [{"system": "http://example.org/tags", "code": "vip"}]},
        "active": True,
        "identifier": [{"system": CID, "value": "110101198005170011"}],
        "name": [{"family": "Müller", "given": ["Jürgen"]}],
        "gender": "male",
        "birthDate": "1980-05-17",
        "deceasedBoolean": False,
        "telecom": [{"system": "phone", "value": "13800000001"}],
        "address": [{"city": "Beijing", "line": ["1 Chang'an Ave"]}],
        "managingOrganization": {"reference": "Organization/org1"},
    }
    p2 = {
        "resourceType": "Patient",
        "id": "p2",
        "identifier": [{"system": "urn:oid:2.16.156.10011.1.19", "value": "HC0002"}],
        "name": [{"family": "ＺＨＡＮＧ", "given": ["San"]}, {"text": "张三"}],
        "gender": "female",
        "birthDate": "1980-05",
        "deceasedDateTime": "2020-01-01",
    }
    p3 = {
        "resourceType": "Patient",
        "id": "p3",
        "identifier": [{"value": "LOCAL1"}],
        "name": [{"family": "Mullerson"}],
        "birthDate": "1990",
    }
    pr1 = {"resourceType": "Practitioner", "id": "pr1", "name": [{"family": "Li"}]}
    e1 = {
        "resourceType": "Encounter",
        "id": "e1",
        "status": "finished",
        "subject": {"reference": "Patient/p1"},
        "period": {"start": "2021-03-04T08:00:00+08:00", "end": "2021-03-05T08:00:00+08:00"},
    }
    e2 = {
        "resourceType": "Encounter",
        "id": "e2",
        "status": "finished",
        "subject": {"reference": "Patient/p1"},
        "period": {"start": "2022-01-01T08:00:00+08:00"},
    }
    e3 = {
        "resourceType": "Encounter",
        "id": "e3",
        "status": "finished",
        "subject": {"reference": "Patient/p1"},
        "period": {"start": "2020-06-01", "end": "2020-06-02"},
    }
    o1 = _obs(
        "o1",
        {"reference": "Patient/p1"},
        "8867-4",
        display="Heart rate",
        valueQuantity=_qty(72, "/min"),
        effectiveDateTime="2021-03-04T10:15:00+08:00",
        encounter={"reference": "Encounter/e1"},
        performer=[{"reference": "Practitioner/pr1"}],
        category=[
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
    )
    o2 = _obs(
        "o2",
        {"reference": "Patient/p1"},
        "29463-7",
        display="Body weight",
        valueQuantity=_qty(70.5, "kg"),
        effectivePeriod={"start": "2021-03-01", "end": "2021-03-10"},
    )
    o3 = _obs(
        "o3",
        {"reference": "Patient/p2"},
        "8867-4",
        display="Heart rate",
        status="preliminary",
        valueQuantity=_qty(100, "/min"),
        effectiveDateTime="2022-01-01",
        hasMember=[{"reference": "Observation/o1"}],
    )
    o4 = _obs("o4", {"reference": "http://other.example.org/fhir/Patient/p9"}, "2339-0")
    o5 = _obs("o5", {"identifier": {"system": CID, "value": "110101198005170011"}}, "2339-0")
    o6 = _obs(
        "o6",
        {"reference": "Patient/p2"},
        "85354-9",
        display="Blood pressure",
        component=[
            {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]}, "valueQuantity": _qty(120, "mm[Hg]")},
            {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]}, "valueQuantity": _qty(80, "mm[Hg]")},
        ],
    )
    o7 = _obs("o7", None, "2339-0", valueString="Trace")
    prov = {
        "resourceType": "Provenance",
        "id": "prov1",
        "target": [{"reference": "Observation/o1"}],
        "recorded": "2021-03-04T10:20:00+08:00",
        "agent": [{"who": {"reference": "Practitioner/pr1"}}],
    }
    risk = [
        {
            "resourceType": "RiskAssessment",
            "id": f"ra{i}",
            "status": "final",
            "subject": {"reference": "Patient/p1"},
            "prediction": [{"probabilityDecimal": v}],
        }
        for i, v in ((1, 0.8), (2, 0.25))
    ]
    vs = [
        {"resourceType": "ValueSet", "id": f"vs{i}", "status": "active", "url": url}
        for i, url in (
            (1, "http://example.org/fhir/ValueSet/abc"),
            (2, "http://example.org/fhir/ValueSet/abc/sub"),
            (3, "http://example.org/fhir/ValueSet/other"),
        )
    ]
    return [org, p1, p2, p3, pr1, e1, e2, e3, o1, o2, o3, o4, o5, o6, o7, prov, *risk, *vs]


def load(url: str) -> Any:
    """A Store at ``url`` loaded with :func:`dataset`."""
    from rhip.store import Store

    store = Store(url)
    store.bulk_write(dataset())
    return store


def ids(store: Any, res_type: str | None, params: list[tuple[str, str]], **kw: Any) -> list[str]:
    """Sorted ids matched by a search (matches only)."""
    result = store.search(res_type, params, count=kw.pop("count", 100), **kw)
    return sorted(m["id"] for m in result.matches)
