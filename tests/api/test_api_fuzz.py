"""Random requests never make the API answer 500: every failure is a 4xx OperationOutcome."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.xdist_group("api_fuzz")

NAMES = st.sampled_from(
    [
        "name",
        "family",
        "birthdate",
        "_id",
        "_lastUpdated",
        "_count",
        "_offset",
        "_sort",
        "_include",
        "_revinclude",
        "_summary",
        "_elements",
        "_total",
        "identifier",
        "gender",
        "general-practitioner",
        "organization:Organization.name",
        "_has:Observation:subject:code",
        "address-city:contains",
        "birthdate:missing",
        "_format",
        "_type",
        "x",
    ]
)
VALUES = st.one_of(
    st.sampled_from(
        [
            "",
            "ge2020",
            "lt2020-01-01T00:00:00Z",
            "2020-13-99",
            "true",
            "-1",
            "0",
            "9" * 30,
            "Patient:organization",
            "*",
            "name,gender",
            "count",
            "a|b",
            "|",
            "urn:x|1",
            "json",
            "xml",
            "Patient/1",
            "eq",
            "ap1980",
            "%",
            "'; drop table resource; --",
        ]
    ),
    st.text(max_size=12),
)
TYPES = st.sampled_from(["Patient", "Observation", "Organization", "Encounter"])
SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _check(response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.json()["resourceType"] == "OperationOutcome"


@SETTINGS
@given(res_type=TYPES, params=st.lists(st.tuples(NAMES, VALUES), max_size=4))
def test_random_searches(module_client, res_type, params):
    _check(module_client.get(f"/fhir/{res_type}", params=params))


@SETTINGS
@given(
    resource=st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8)),
        lambda children: st.one_of(
            st.lists(children, max_size=3), st.dictionaries(st.text(max_size=8), children, max_size=3)
        ),
        max_leaves=10,
    )
)
def test_random_bodies(module_client, resource):
    body = resource if not isinstance(resource, dict) else {"resourceType": "Patient", **resource}
    _check(module_client.post("/fhir/Patient", content=json.dumps(body)))
    _check(module_client.post("/fhir", content=json.dumps(body)))
    _check(module_client.put("/fhir/Patient/fuzz-1", content=json.dumps(body)))
