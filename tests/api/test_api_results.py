"""The pure parts of ``$lastn`` and ``$prior-results``: grouping by code, ordering, windows, advertising.

The HTTP behaviour with authentication on (linked records, consent, audit) is tested in
``tests/security/test_security_results_sharing.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rhip.api.capability import statement_body
from rhip.api.lastn import group_by_code, last_n, newest_first, parse_lastn
from rhip.api.prior_results import RequestedTest, parse_tests
from rhip.api.recognition import default_windows, recognition_windows
from rhip.errors import ConfigurationError, InvalidRequest
from rhip.fhir.terminology import lab_test


def _obs(
    rid: str, codes: list[tuple[str, str]] | None = None, text: str | None = None, **extra: Any
) -> dict[str, Any]:
    concept: dict[str, Any] = {}
    if codes:
        concept["coding"] = [{"system": s, "code": c} for s, c in codes]
    if text:
        concept["text"] = text
    return {"resourceType": "Observation", "id": rid, "code": concept, **extra}


def _ids(groups: list[list[dict[str, Any]]]) -> list[set[str]]:
    return [{o["id"] for o in g} for g in groups]


def test_codes_group_transitively_through_translations() -> None:
    """The spec's examples: a|b|a,c -> [a,c],[b]; a|b|a,b -> one group; text groups by exact text."""
    a, b, c = ("s", "a"), ("s", "b"), ("s", "c")
    assert _ids(group_by_code([_obs("1", [a]), _obs("2", [b]), _obs("3", [a, c])])) == [{"1", "3"}, {"2"}]
    assert _ids(group_by_code([_obs("1", [a]), _obs("2", [b]), _obs("3", [a, b])])) == [{"1", "2", "3"}]
    texts = [_obs("1", text="text"), _obs("2", text="Text"), _obs("3", text="t e x t")]
    assert len(group_by_code(texts)) == 3
    assert _ids(group_by_code([_obs("1", [("x", "1")]), _obs("2", [("y", "1")])])) == [{"1"}, {"2"}]


def test_newest_first_reads_every_form_of_effective() -> None:
    found = newest_first(
        [
            _obs("undated", [("s", "a")]),
            _obs("year", [("s", "a")], effectiveDateTime="2024"),
            _obs("period", [("s", "a")], effectivePeriod={"start": "2024-03-01", "end": "2024-03-02"}),
            _obs("instant", [("s", "a")], effectiveInstant="2024-05-01T08:00:00+08:00"),
            _obs("issued", [("s", "a")], issued="2024-02-01T00:00:00Z"),
        ]
    )
    assert [o["id"] for o in found] == ["instant", "period", "issued", "year", "undated"]


def test_last_n_keeps_n_per_group() -> None:
    obs = [_obs(f"a{d}", [("s", "a")], effectiveDateTime=f"2024-01-0{d}") for d in range(1, 6)]
    obs.append(_obs("b1", [("s", "b")], effectiveDateTime="2023-01-01"))
    assert [o["id"] for o in last_n(obs, 2)] == ["a5", "a4", "b1"]


def test_parse_lastn_keeps_criteria_and_refuses_unknown_names() -> None:
    query = parse_lastn(
        [("patient", "Patient/1,2"), ("code", "x"), ("date", "ge2024"), ("max", "3")], lambda n: True
    )
    assert (
        query.patients == ["1", "2"]
        and query.max == 3
        and query.criteria == [("code", "x"), ("date", "ge2024")]
    )
    with pytest.raises(InvalidRequest) as err:
        parse_lastn([("patient", "1"), ("code", "x"), ("bogus", "1")], lambda n: n != "bogus")
    assert err.value.expression == ("bogus",)


def test_parse_tests_takes_system_code_and_bare_codes() -> None:
    assert parse_tests(["http://loinc.org|718-7,4548-4", "718-7"]) == [
        RequestedTest("http://loinc.org", "718-7"),
        RequestedTest(None, "4548-4"),
        RequestedTest(None, "718-7"),
    ]
    with pytest.raises(InvalidRequest):
        parse_tests(["http://loinc.org|"])


def test_every_shipped_window_is_a_lab_test_of_the_terminology() -> None:
    windows = default_windows()
    assert windows and all(lab_test(code) is not None for code in windows)
    assert windows["718-7"].days == 7 and windows["2823-3"].days == 7  # blood count, electrolytes
    assert windows["1742-6"].days == 30 and windows["4548-4"].days == 90  # liver panel, HbA1c


def test_override_file_replaces_and_adds_rows(tmp_path: Path) -> None:
    path = tmp_path / "w.csv"
    path.write_text("loinc,days,group,group_zh\n718-7,3,cbc,血常规\n99999-9,5,x,x\n", encoding="utf-8")
    windows = recognition_windows(path)
    assert windows["718-7"].days == 3 and windows["99999-9"].days == 5 and windows["4548-4"].days == 90


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("loinc,days\n718-7,3\n", "missing column"),
        ("loinc,days,group,group_zh\n718-7,0,a,b\n", "line 2: days"),
        ("loinc,days,group,group_zh\n718-7,3,a,b\nCBC,3,a,b\n", "line 3: loinc"),
    ],
)
def test_bad_override_file_names_the_file_and_line(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigurationError) as err:
        recognition_windows(path)
    assert "RHIP_RECOGNITION_WINDOWS_FILE" in err.value.diagnostics and named in err.value.diagnostics
    with pytest.raises(ConfigurationError, match="no such file"):
        recognition_windows(tmp_path / "absent.csv")


def test_capability_statement_declares_the_operations() -> None:
    resources = {r["type"]: r for r in statement_body()["rest"][0]["resource"]}
    assert [op["name"] for op in resources["Observation"]["operation"]] == ["lastn"]
    assert [op["name"] for op in resources["Patient"]["operation"]] == ["everything", "prior-results"]
    assert [op["name"] for op in resources["ServiceRequest"]["operation"]] == ["prior-results"]


def test_openapi_lists_the_operations(tmp_path: Path) -> None:
    from rhip.api import create_app
    from rhip.config import Settings
    from rhip.store import Store

    store = Store(f"sqlite:///{tmp_path / 'rhip.sqlite'}")
    try:
        paths = create_app(store, Settings(data_dir=tmp_path, auth_enabled=False)).openapi()["paths"]
    finally:
        store.close()
    assert {"get", "post"} <= set(paths["/fhir/Observation/$lastn"])
    assert "get" in paths["/fhir/Patient/{patient_id}/$prior-results"]
    assert "get" in paths["/fhir/ServiceRequest/{order_id}/$prior-results"]


def test_docs_list_every_shipped_window() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text(encoding="utf-8")
    table = doc.split("| 检查组 group |", 1)[1].split("```", 1)[0]
    for code, window in default_windows().items():
        row = next(
            (
                line
                for line in table.splitlines()
                if f" {code}," in line or f" {code} |" in line or f" {code};" in line
            ),
            "",
        )
        assert row and f"| {window.days} day" in row, code
