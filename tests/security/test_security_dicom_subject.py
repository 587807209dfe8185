"""DICOM studies reach their resident's care team and whole-resident answers, over real HTTP with
authentication on.

Everything comes through the real connectors: the HL7 v2 HIS of facility S sends the records of
two people (one before the PACS sends that person's study, one after); a FHIR-native HIS of
facility T sends its own record of the first person, whose study at T follows. docA treated both
people at S (their encounters name docA and S's Organization); docB has no relationship with
them. The MPI links the first person's records at S and T to one golden Patient. Runs on SQLite
and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid

from imaging_feeds import adt_file, dicom_file, fhir_patient_file
from rhip.config import Settings
from rhip.fhir.identifiers import make_citizen_id
from rhip.ingest.provenance import stable_id
from rhip_testkit import new_pg_database, running_server

pytestmark = pytest.mark.xdist_group("security_dicom_subject")
S, T = "330402S01", "330402T01"
ACCOUNTS: dict[str, tuple[str, dict[str, str]]] = {
    "admin": ("platform_admin", {}),
    "docA": ("practitioner", {"practitioner_id": "docA", "organization_id": "orgS"}),
    "docB": ("practitioner", {"practitioner_id": "docB", "organization_id": "orgB"}),
}


@dataclass
class Imaging:
    """The running server, a token per account, and the ids the feeds gave."""

    base: str
    tokens: dict[str, str]
    ids: dict[str, str]

    def get(self, who: str, path: str, **params: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"}
        return httpx.get(f"{self.base}/{path}", params=params, headers=headers, timeout=60)

    def found(self, who: str, path: str, **params: str) -> set[str]:
        """Ids of the resources a search or operation answers ``who`` with (AuditEvents left out)."""
        response = self.get(who, path, **params)
        assert response.status_code == 200, (who, path, response.text)
        entries = [e["resource"] for e in response.json().get("entry", [])]
        return {r["id"] for r in entries if r["resourceType"] != "AuditEvent"}


def _encounter(eid: str, patient: str) -> dict[str, Any]:
    return {
        "resourceType": "Encounter", "id": eid, "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{patient}"},
        "serviceProvider": {"reference": "Organization/orgS"},
        "participant": [{"individual": {"reference": "Practitioner/docA"}}],
    }  # fmt: skip


def _feed(store: Any, work: Path) -> dict[str, str]:
    """Send every feed through the real connectors and link the Patients; the ids that matter."""
    from rhip.ingest.pipeline import Pipeline
    from rhip.ingest.runner import ingest_file
    from rhip.mpi.service import match_and_link

    pipeline = Pipeline(store)
    first = make_citizen_id("330402", date(1980, 1, 1), 62, "female")
    second = make_citizen_id("330402", date(1980, 1, 1), 64, "female")
    early, late, at_t = generate_uid(), generate_uid(), generate_uid()
    ingest_file(pipeline, adt_file(work / "a.hl7", S, "M-1", first, "C-1"), S)
    ingest_file(pipeline, dicom_file(work / "early.dcm", early, "M-1", S), S)
    ingest_file(pipeline, dicom_file(work / "late.dcm", late, "M-2", S, body_part="HEAD"), S)
    ingest_file(pipeline, adt_file(work / "b.hl7", S, "M-2", second, "C-2"), S)
    ingest_file(pipeline, fhir_patient_file(work / "Patient.ndjson", T, "t-1", "0000001", first), T)
    ingest_file(pipeline, dicom_file(work / "t.dcm", at_t, "0000001", T, modality="DX"), T)
    ids = {
        "p1": stable_id("Patient", S, "M-1"),
        "p2": stable_id("Patient", S, "M-2"),
        "pT": "t-1",
        "early": stable_id("ImagingStudy", early),
        "late": stable_id("ImagingStudy", late),
        "atT": stable_id("ImagingStudy", at_t),
    }
    for body in (
        {"resourceType": "Organization", "id": "orgS", "name": "S"},
        {"resourceType": "Organization", "id": "orgB", "name": "B"},
        {"resourceType": "Practitioner", "id": "docA"},
        {"resourceType": "Practitioner", "id": "docB"},
        _encounter("encA1", ids["p1"]),
        _encounter("encA2", ids["p2"]),
    ):
        store.update(body["resourceType"], body["id"], body)
    residents = {
        p: match_and_link(store, store.read("Patient", ids[p])).resident_id for p in ("p1", "pT", "p2")
    }
    assert residents["p1"] == residents["pT"] != residents["p2"]
    ids["golden"] = residents["p1"]
    return ids


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def imaging(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Imaging]:
    """uvicorn with authentication on over a store the feeds filled (SQLite or PostgreSQL)."""
    from rhip.api import create_app
    from rhip.security.testing import issue_token
    from rhip.store import Store

    with ExitStack() as stack:
        data_dir: Path = tmp_path_factory.mktemp("dicom_subject")
        if request.param == "sqlite":
            url = f"sqlite:///{data_dir / 'rhip.sqlite'}"
        else:
            url = stack.enter_context(new_pg_database("rhip_dicom_subject"))
        store = Store(url)
        stack.callback(store.close)
        work = data_dir / "feeds"
        work.mkdir()
        ids = _feed(store, work)
        app = create_app(store, Settings(data_dir=data_dir, database_url=url, auth_enabled=True))
        tokens = {
            name: issue_token(app, role=role, username=name, **binding)
            for name, (role, binding) in ACCOUNTS.items()
        }
        yield Imaging(stack.enter_context(running_server(app)) + "/fhir", tokens, ids)


def test_the_care_team_finds_the_studies_by_patient(imaging: Imaging) -> None:
    ids = imaging.ids
    assert imaging.found("docA", "ImagingStudy", patient=ids["p1"]) == {ids["early"]}
    assert imaging.found("docA", "ImagingStudy", patient=ids["p2"]) == {ids["late"]}  # PACS came first
    read = imaging.get("docA", f"ImagingStudy/{ids['early']}")
    assert read.status_code == 200 and read.json()["subject"]["reference"] == f"Patient/{ids['p1']}"


def test_a_practitioner_without_a_relationship_does_not_see_them(imaging: Imaging) -> None:
    ids = imaging.ids
    assert not imaging.found("docB", "ImagingStudy", patient=ids["p1"])
    assert imaging.get("docB", f"ImagingStudy/{ids['early']}").status_code in (403, 404)


def test_the_residents_everything_holds_the_studies_of_every_facility(imaging: Imaging) -> None:
    ids = imaging.ids
    whole = imaging.found("admin", f"Patient/{ids['golden']}/$everything")
    assert {ids["early"], ids["atT"], ids["p1"], ids["pT"]} <= whole
    assert ids["late"] not in whole  # the other person's study
    assert ids["early"] in imaging.found("docA", f"Patient/{ids['golden']}/$everything")
