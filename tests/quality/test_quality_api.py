"""``/quality`` over a real server with authentication on: filters are checked, not silently empty."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from backoffice_testkit import BATCH_ONLY, TALLY_ONLY, BackOffice, fed_server


@pytest.fixture
def office(db_url: str, tmp_path: Path) -> Iterator[BackOffice]:
    with fed_server(db_url, tmp_path) as server:
        yield server


def _diagnostics(response: object) -> str:
    body = response.json()  # type: ignore[attr-defined]
    assert body["resourceType"] == "OperationOutcome", body
    return str(body["issue"][0]["diagnostics"])


@pytest.mark.parametrize("path", ["/quality/scores", "/quality/scores/rules"])
def test_an_unknown_facility_is_404_naming_it(office: BackOffice, path: str) -> None:
    """``/quality/scores?facility=NOPE`` answered ``[]`` while ``rhip quality --facility NOPE``
    said the facility is unknown."""
    response = office.get(path, facility="NOPE")
    assert response.status_code == 404, response.text
    assert "unknown facility 'NOPE'" in _diagnostics(response)
    assert response.json()["issue"][0]["code"] == "not-found"
    longer = office.get(path, facility="F" * 300)  # beyond the column's 64 characters: still a 404
    assert longer.status_code == 404 and f"'{'F' * 64}'" in _diagnostics(longer)


@pytest.mark.parametrize("path", ["/quality/scores", "/quality/scores/rules"])
def test_known_facilities_answer_their_scores_or_an_empty_list(office: BackOffice, path: str) -> None:
    """A facility with tallies gets them; one that sent a batch but has no tally gets ``[]``."""
    rows = office.get(path, facility="F1").json()
    assert rows and {r["facility"] for r in rows} == {"F1"}
    assert {r["facility"] for r in office.get(path, facility=TALLY_ONLY).json()} == {TALLY_ONLY}
    assert office.get(path, facility=BATCH_ONLY).json() == []
    assert {r["facility"] for r in office.get(path).json()} == {"F1", TALLY_ONLY}


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"from": "yesterday"}, "from: 'yesterday' is not a day"),
        ({"to": "2026-13-01"}, "to: '2026-13-01' is not a day"),
        ({"from": "2026-11-21", "to": "2026-11-20"}, "from 2026-11-21 is after to 2026-11-20"),
    ],
)
def test_a_malformed_day_range_is_400(office: BackOffice, params: dict[str, str], named: str) -> None:
    """A ``from``/``to`` that is not a day compared as text and answered ``[]``."""
    for path in ("/quality/scores", "/quality/scores/rules"):
        response = office.get(path, **params)
        assert response.status_code == 400, response.text
        assert named in _diagnostics(response)
    assert office.get("/quality/scores", **{"from": "2026-11-20", "to": "2026-11-20"}).status_code == 200
