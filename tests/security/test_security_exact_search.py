"""Restricted searches are exact: totals, pages beyond 5,000 matches and ``_summary=count``.

Over real HTTP, on SQLite and PostgreSQL: a practitioner with 6,000 visible Observations among
others they may not see (other facilities' residents, and records of their own residents that
consent hides), and a public-health officer with 6,000 visible laboratory results among records
of other areas and non-notifiable ones. Ids are shuffled so that visible and hidden records
alternate in the store's order, and the expected answers are derived from how the data was built.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from security_seed import consent

from rhip.config import Settings
from rhip_testkit import running_server

pytestmark = pytest.mark.slow
PER_PATIENT = 200  # 30 residents x 200 = 6,000 visible records for each caller
OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"


@dataclass
class Region:
    """The store's expected answers: ids each caller must see, sorted as the search sorts them."""

    doctor: list[str]
    officer: list[str]


def _obs(rid: str, patient: str, category: str, psy: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "category": [{"coding": [{"system": OBS_CAT, "code": category}]}],
    }
    if psy:
        body["meta"] = {
            "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]
        }
    return body


def _people(prefix: str, count: int, district: str, org: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for n in range(count):
        pid = f"{prefix}{n}"
        out.append({"resourceType": "Patient", "id": pid, "address": [{"district": district}]})
        out.append(
            {
                "resourceType": "Encounter",
                "id": f"enc-{pid}",
                "status": "finished",
                "class": {"code": "AMB"},
                "subject": {"reference": f"Patient/{pid}"},
                "serviceProvider": {"reference": f"Organization/{org}"},
            }
        )
    return out


def build_region() -> tuple[list[dict[str, Any]], Region]:
    """Residents of docA's facility (vital signs), of area 110106 (lab results) and of elsewhere."""
    rows = [{"resourceType": "Organization", "id": o} for o in ("orgA", "orgB")]
    rows += _people("v", 30, "110105", "orgA") + _people("w", 30, "110106", "orgB")
    rows += [*_people("x", 5, "110107", "orgB"), consent("consent-v0", "v0", deny_labels=("PSY",))]
    plan: list[tuple[str, str, bool, str]] = []  # (patient, category, psy, who sees it)
    plan += [(f"v{n}", "vital-signs", False, "doctor") for n in range(30) for _ in range(PER_PATIENT)]
    plan += [("v0", "vital-signs", True, "")] * 100  # the resident denied PSY records: hidden
    plan += [(f"w{n}", "laboratory", False, "officer") for n in range(30) for _ in range(PER_PATIENT)]
    plan += [(f"x{n}", "laboratory", False, "") for n in range(5) for _ in range(50)]
    random.Random(7).shuffle(plan)
    region = Region([], [])
    for k, (patient, category, psy, who) in enumerate(plan):
        rid = f"o{k:06d}"
        rows.append(_obs(rid, patient, category, psy))
        if who:
            getattr(region, who).append(rid)
    return rows, region


@pytest.fixture
def served(db_url: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, str], Region]]:
    """A server over the region; its FHIR base, a token for docA and the officer, and the answers."""
    from rhip.api import create_app
    from rhip.security.testing import issue_token
    from rhip.store import Store

    store = Store(db_url)
    rows, region = build_region()
    store.bulk_write(rows)
    app = create_app(store, Settings(data_dir=tmp_path, database_url=db_url, auth_enabled=True))
    tokens = {
        "docA": issue_token(app, role="practitioner", practitioner_id="docA", organization_id="orgA"),
        "ph": issue_token(app, role="public_health", area="110106"),
    }
    with running_server(app) as root:
        yield root + "/fhir", tokens, region
    store.close()


def _get(base: str, token: str, path: str, params: dict[str, str]) -> dict[str, Any]:
    response = httpx.get(
        f"{base}/{path}", params=params, headers={"Authorization": f"Bearer {token}"}, timeout=120
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _page_ids(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


def _has_next(bundle: dict[str, Any]) -> bool:
    return any(link["relation"] == "next" for link in bundle.get("link", []))


def _check_caller(base: str, token: str, expected: list[str]) -> None:
    assert len(expected) == 6000
    deep = _get(base, token, "Observation", {"_count": "50", "_offset": "5500", "_total": "accurate"})
    assert deep["total"] == 6000 and _page_ids(deep) == expected[5500:5550] and _has_next(deep)
    last = _get(base, token, "Observation", {"_count": "50", "_offset": "5980"})
    assert _page_ids(last) == expected[5980:] and not _has_next(last)
    assert last["total"] == 6000  # the scan reached the end: the total is known, hence given
    # by default the scan stops once the page is known and TOTAL_SCAN_MAX (1,000) matches were
    # tested: the same page, no total (every match would have to be decoded and tested)
    first = _get(base, token, "Observation", {"_count": "50"})
    assert "total" not in first and _page_ids(first) == expected[:50] and _has_next(first)
    estimated = _get(base, token, "Observation", {"_count": "50", "_offset": "5500", "_total": "estimate"})
    assert "total" not in estimated and _page_ids(estimated) == expected[5500:5550]
    counted = _get(base, token, "Observation", {"_summary": "count"})
    assert counted["total"] == 6000 and not counted.get("entry")
    quick = _get(base, token, "Observation", {"_count": "50", "_offset": "5500", "_total": "none"})
    assert "total" not in quick and _page_ids(quick) == expected[5500:5550] and _has_next(quick)


def test_practitioner_and_officer_searches_are_exact(
    served: tuple[str, dict[str, str], Region], monkeypatch: pytest.MonkeyPatch
) -> None:
    import rhip.security.relations as relations
    import rhip.security.runtime as runtime

    base, tokens, region = served
    _check_caller(base, tokens["docA"], region.doctor)
    _check_caller(base, tokens["ph"], region.officer)
    backwards = _get(
        base,
        tokens["docA"],
        "Observation",
        {"_sort": "-_id", "_count": "50", "_offset": "5500", "_total": "accurate"},
    )
    assert backwards["total"] == 6000 and _page_ids(backwards) == region.doctor[::-1][5500:5550]
    # the same answers when the practitioner's residents are too many to narrow in SQL ...
    monkeypatch.setattr(runtime, "NARROW_MAX", 10)
    deep = _get(
        base, tokens["docA"], "Observation", {"_count": "50", "_offset": "5500", "_total": "accurate"}
    )
    assert deep["total"] == 6000 and _page_ids(deep) == region.doctor[5500:5550]
    # ... and too many to hold in memory, so that each resident is looked up on its own
    monkeypatch.setattr(relations, "CARE_SET_MAX", 10)
    deep = _get(
        base, tokens["docA"], "Observation", {"_count": "50", "_offset": "5500", "_total": "accurate"}
    )
    assert deep["total"] == 6000 and _page_ids(deep) == region.doctor[5500:5550]
    patients = _get(base, tokens["docA"], "Patient", {"_count": "100"})
    assert sorted(_page_ids(patients)) == sorted(f"v{n}" for n in range(30)) and patients["total"] == 30
