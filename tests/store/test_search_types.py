"""Search by every parameter type, prefix and modifier, on SQLite and PostgreSQL.

Expected ids follow the FHIR R4 search rules (http://hl7.org/fhir/R4/search.html): strings match
case- and accent-insensitively from the start, dates compare as ranges with the precision written,
numbers and quantities match within the implied precision.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from search_testkit import BACKENDS, CID, LOINC, database, ids, load

pytestmark = pytest.mark.xdist_group("search_types")


@pytest.fixture(scope="module", params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp: Path = tmp_path_factory.mktemp("search_types")
    with database(request.param, tmp) as url:
        st = load(url)
        yield st
        st.close()


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ([("name", "mul")], ["p1", "p3"]),  # accent-insensitive starts-with
        ([("name", "MÜL")], ["p1", "p3"]),
        ([("family", "zhang")], ["p2"]),  # full-width folded
        ([("name", "张")], ["p2"]),
        ([("given", "jur")], ["p1"]),
        ([("name", "ller")], []),  # not a prefix
        ([("name:contains", "ller")], ["p1", "p3"]),
        ([("name:exact", "Müller")], ["p1"]),
        ([("name:exact", "muller")], []),
        ([("address-city", "bei")], ["p1"]),
        ([("address", "1 chang")], ["p1"]),
        ([("name", "mul,zha")], ["p1", "p2", "p3"]),  # comma = OR
        ([("name", "mul"), ("name", "mullers")], ["p3"]),  # repeated = AND
        ([("phonetic", "zhang")], ["p2"]),  # pinyin key: 张三 and ＺＨＡＮＧ
        ([("phonetic", "张")], ["p2"]),
        ([("phonetic", "Zhang San")], ["p2"]),
        ([("phonetic", "mül")], ["p1", "p3"]),
    ],
)
def test_string(store: Any, params: list[tuple[str, str]], expected: list[str]) -> None:
    assert ids(store, "Patient", params) == expected


@pytest.mark.parametrize(
    ("res_type", "params", "expected"),
    [
        ("Patient", [("gender", "male")], ["p1"]),
        ("Patient", [("gender:not", "male")], ["p2", "p3"]),
        ("Patient", [("gender:missing", "true")], ["p3"]),
        ("Patient", [("gender:missing", "false")], ["p1", "p2"]),
        ("Patient", [("identifier", f"{CID}|110101198005170011")], ["p1"]),
        ("Patient", [("identifier", "110101198005170011")], ["p1"]),
        ("Patient", [("identifier", f"{CID}|")], ["p1"]),
        ("Patient", [("identifier", "|LOCAL1")], ["p3"]),
        ("Patient", [("identifier", "|HC0002")], []),
        ("Patient", [("active", "true")], ["p1"]),
        ("Patient", [("deceased", "true")], ["p2"]),
        ("Patient", [("deceased", "false")], ["p1"]),
        ("Patient", [("phone", "13800000001")], ["p1"]),
        ("Patient", [("_tag", "http://example.org/tags|vip")], ["p1"]),
        ("Observation", [("code", "8867-4")], ["o1", "o3"]),
        ("Observation", [("code", f"{LOINC}|8867-4")], ["o1", "o3"]),
        ("Observation", [("code", "http://snomed.info/sct|8867-4")], []),
        ("Observation", [("code:text", "heart")], ["o1", "o3"]),
        ("Observation", [("status:not", "final")], ["o3"]),
        ("Observation", [("category", "vital-signs")], ["o1"]),
        ("Observation", [("_id", "o1,o2")], ["o1", "o2"]),
    ],
)
def test_token(store: Any, res_type: str, params: list[tuple[str, str]], expected: list[str]) -> None:
    assert ids(store, res_type, params) == expected


@pytest.mark.parametrize(
    ("res_type", "params", "expected"),
    [
        ("Patient", [("birthdate", "1980")], ["p1", "p2"]),
        ("Patient", [("birthdate", "1980-05")], ["p1", "p2"]),
        ("Patient", [("birthdate", "eq1980-05-17")], ["p1"]),
        ("Patient", [("birthdate", "ne1980")], ["p3"]),
        ("Patient", [("birthdate", "gt1980-05-17")], ["p2", "p3"]),
        ("Patient", [("birthdate", "lt1980-05-17")], ["p2"]),
        ("Patient", [("birthdate", "ge1990")], ["p3"]),
        ("Patient", [("birthdate", "le1980")], ["p1", "p2"]),
        ("Patient", [("birthdate", "sa1980")], ["p3"]),
        ("Patient", [("birthdate", "eb1990")], ["p1", "p2"]),
        ("Patient", [("birthdate", "ap1980-05-17")], ["p1", "p2"]),
        ("Patient", [("birthdate", "ge1980"), ("birthdate", "lt1990")], ["p1", "p2"]),
        ("Observation", [("date", "2021-03")], ["o1", "o2"]),
        ("Observation", [("date", "2021-03-05")], []),  # the period is wider than the day
        ("Observation", [("date", "ge2021-03-05")], ["o2", "o3"]),
        ("Observation", [("date", "2021-03-04T02:15:00Z")], ["o1"]),  # +08:00 written, Z searched
        ("Observation", [("date", "2021-03-04")], ["o1"]),  # local day (Asia/Shanghai)
        ("Encounter", [("date", "ge2022")], ["e2"]),  # open-ended period
        ("Patient", [("_lastUpdated", "gt2000-01-01")], ["p1", "p2", "p3"]),
        ("Patient", [("_lastUpdated", "lt2000-01-01")], []),
    ],
)
def test_date(store: Any, res_type: str, params: list[tuple[str, str]], expected: list[str]) -> None:
    assert ids(store, res_type, params) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ([("value-quantity", "72")], ["o1"]),
        ([("value-quantity", "72.0")], ["o1"]),
        ([("value-quantity", "70")], []),  # 70.5 is outside [69.5, 70.5)
        ([("value-quantity", "7e1")], ["o1", "o2"]),  # one significant figure: [65, 75)
        ([("value-quantity", "gt71")], ["o1", "o3"]),
        ([("value-quantity", "le70.5")], ["o2"]),
        ([("value-quantity", "ne72")], ["o2", "o3"]),
        ([("value-quantity", "ap70")], ["o1", "o2"]),
        ([("value-quantity", "72|http://unitsofmeasure.org|/min")], ["o1"]),
        ([("value-quantity", "72||/min")], ["o1"]),
        ([("value-quantity", "72||kg")], []),
        ([("component-code-value-quantity", "8480-6$120")], ["o6"]),
        ([("component-code-value-quantity", f"{LOINC}|8462-4$lt90")], ["o6"]),
        ([("component-code-value-quantity", "8462-4$120")], []),  # values stay with their component
        ([("code-value-quantity", "8867-4$gt90")], ["o3"]),
        ([("value-string", "tra")], ["o7"]),
    ],
)
def test_quantity_and_composite(store: Any, params: list[tuple[str, str]], expected: list[str]) -> None:
    assert ids(store, "Observation", params) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ([("probability", "0.8")], ["ra1"]),
        ([("probability", "gt0.5")], ["ra1"]),
        ([("probability", "le0.25")], ["ra2"]),
        ([("probability", "lt0.1")], []),
    ],
)
def test_number(store: Any, params: list[tuple[str, str]], expected: list[str]) -> None:
    assert ids(store, "RiskAssessment", params) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ([("patient", "p1")], ["o1", "o2"]),
        ([("patient", "Patient/p1")], ["o1", "o2"]),
        ([("subject:Patient", "p1")], ["o1", "o2"]),
        ([("subject:Group", "p1")], []),
        ([("subject", "http://other.example.org/fhir/Patient/p9")], ["o4"]),
        ([("subject", "p9")], []),  # another server's Patient/p9 is not a local p9
        ([("subject:identifier", f"{CID}|110101198005170011")], ["o5"]),
        ([("subject:missing", "true")], ["o7"]),
        ([("performer:Practitioner", "pr1")], ["o1"]),
        ([("encounter", "Encounter/e1")], ["o1"]),
        ([("has-member", "o1")], ["o3"]),
    ],
)
def test_reference(store: Any, params: list[tuple[str, str]], expected: list[str]) -> None:
    assert ids(store, "Observation", params) == expected


def test_reference_to_own_base_url(store: Any) -> None:
    """An absolute URL under this server's base matches like a relative reference."""
    from rhip.store.search import execute_search

    with store.engine.connect() as conn:
        result = execute_search(
            conn,
            "Observation",
            [("patient", "http://rhip.test/fhir/Patient/p2")],
            count=10,
            offset=0,
            base_url="http://rhip.test/fhir",
        )
    assert sorted(m["id"] for m in result.matches) == ["o3", "o6"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ([("url", "http://example.org/fhir/ValueSet/abc")], ["vs1"]),
        ([("url:below", "http://example.org/fhir/ValueSet/abc")], ["vs1", "vs2"]),
        ([("url:above", "http://example.org/fhir/ValueSet/abc/sub/deeper")], ["vs1", "vs2"]),
        ([("url:missing", "false")], ["vs1", "vs2", "vs3"]),
    ],
)
def test_uri(store: Any, params: list[tuple[str, str]], expected: list[str]) -> None:
    assert ids(store, "ValueSet", params) == expected
