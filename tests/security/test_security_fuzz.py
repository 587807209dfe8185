"""Fuzzing every GET path of the OpenAPI description: never a 500, never data without a token,
and a resident's token never yields another resident's records."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rhip.security.middleware import PUBLIC_PATHS

if TYPE_CHECKING:  # the fixture's type only; importing conftest by name is ambiguous across folders
    from conftest import SecuredServer

pytestmark = pytest.mark.xdist_group("security_fuzz")
_WORDS = st.sampled_from(
    ["Patient", "Observation", "Condition", "pat1", "pat2", "cond3", "Encounter", "x", "_history"]
)
_TEXT = st.one_of(_WORDS, st.text(alphabet="abcXYZ019-._%$/", min_size=1, max_size=12))
#: 501 is the API's answer for a FHIR operation it does not implement, not a failure.
_OK_STATUS = (501,)
OTHER_PATIENTS = ("pat2", "pat3", "pat4")


@pytest.fixture(scope="module")
def get_paths(secured: SecuredServer) -> list[str]:
    """Every GET path template the app describes in its OpenAPI document."""
    spec = httpx.get(secured.base.removesuffix("/fhir") + "/openapi.json", timeout=30).json()
    return sorted(p for p, ops in spec["paths"].items() if "get" in ops)


def _fill(template: str, values: list[str]) -> str:
    parts = iter(values)
    return re.sub(r"\{[^}]+\}", lambda _: next(parts, "x"), template)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_gets_never_fail_or_leak(
    secured: SecuredServer, get_paths: list[str], data: st.DataObject
) -> None:
    template = data.draw(st.sampled_from(get_paths))
    path = _fill(template, data.draw(st.lists(_TEXT, min_size=3, max_size=3)))
    params = data.draw(
        st.dictionaries(
            st.sampled_from(["_count", "patient", "_include", "subject", "_summary"]), _TEXT, max_size=2
        )
    )
    root = secured.base.removesuffix("/fhir")
    anonymous = httpx.get(root + path, params=params, timeout=30)
    assert anonymous.status_code in _OK_STATUS or anonymous.status_code < 500, (path, anonymous.text[:200])
    if path not in PUBLIC_PATHS and not path.startswith("/docs"):
        assert anonymous.status_code in (401, 404, 405), (path, anonymous.status_code)
        for pid in ("pat1", *OTHER_PATIENTS):
            assert f"Patient/{pid}" not in anonymous.text
    resident = httpx.get(
        root + path,
        params=params,
        headers={"Authorization": f"Bearer {secured.tokens['resident1']}"},
        timeout=30,
    )
    assert resident.status_code in _OK_STATUS or resident.status_code < 500, (path, resident.text[:200])
    if resident.status_code == 200 and "json" in resident.headers.get("content-type", ""):
        for pid in OTHER_PATIENTS:
            assert f'"Patient/{pid}"' not in resident.text, path
