"""``$prior-results``: before ordering tests, the resident's latest result of each across the region.

For each requested lab test (a LOINC ``system|code`` or a bare code) the answer gives the most recent
result the caller may see among all the resident's linked records (any facility), where and when
it was made, its value, the recognition window of that test (:mod:`rhip.api.recognition`) and
whether the result still falls inside it, i.e. whether the region recognises it in place of a new
test (检验结果互认).

The answer is a FHIR ``Parameters`` resource, one ``test`` parameter per requested code with its
parts: an operation that returns facts computed about resources (not the resources themselves, nor
a problem with the request) returns Parameters in FHIR's operation framework. An OperationOutcome
per result would report data as "issues", and a Bundle could not carry the window and the verdict
without an extension. The Observations themselves are referenced, so a client reads them in full.
Imaging examinations (检查结果互认) are answered the same way by :mod:`rhip.api.prior_imaging`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from rhip.api.lastn import effective_instant, newest_first
from rhip.api.recognition import Window
from rhip.errors import InvalidRequest
from rhip.fhir import systems

_UCUM = "http://unitsofmeasure.org"
#: Statuses of an Observation, ImagingStudy or DiagnosticReport that hold no result to recognise:
#: not made yet (``registered``), never made (``cancelled``) or withdrawn (``entered-in-error``).
NOT_A_RESULT = frozenset({"registered", "cancelled", "entered-in-error"})
#: Finds the facility (``Organization/[id]``) of an Observation, or None.
FacilityOf = Callable[[dict[str, Any]], str | None]


@dataclass(frozen=True)
class RequestedTest:
    """One requested test: a code and its system (None: any system, the window looked up as LOINC)."""

    system: str | None
    code: str

    @property
    def token(self) -> str:
        """The test as a token search value."""
        return f"{self.system}|{self.code}" if self.system else self.code


def parse_tests(values: Sequence[str]) -> list[RequestedTest]:
    """The ``code`` parameter(s): comma-separated ``system|code`` or bare codes; 400 naming ``code``.

    No values give no tests (the request may ask for imaging examinations only).
    """
    tests: list[RequestedTest] = []
    for value in values:
        for item in value.split(","):
            system, _, code = item.strip().rpartition("|")
            if not code.strip():
                raise InvalidRequest(
                    f"code: expected system|code, got '{item.strip()[:40]}'", expression=("code",)
                )
            test = RequestedTest(system.strip() or None, code.strip())
            if test not in tests:
                tests.append(test)
    return tests


def _has_coding(observation: dict[str, Any], test: RequestedTest) -> bool:
    for coding in (observation.get("code") or {}).get("coding") or []:
        same_code = isinstance(coding, dict) and coding.get("code") == test.code
        if same_code and (test.system is None or coding.get("system") == test.system):
            return True
    return False


def latest_of(observations: Sequence[dict[str, Any]], test: RequestedTest) -> dict[str, Any] | None:
    """The most recent result coded with ``test``, or None: a withdrawn or not yet made result
    (:data:`NOT_A_RESULT`) is skipped, so the one before it is answered instead."""
    matching = newest_first(
        o for o in observations if o.get("status") not in NOT_A_RESULT and _has_coding(o, test)
    )
    return matching[0] if matching else None


def window_parts(window: Window | None) -> list[dict[str, Any]]:
    """The ``window`` and ``group`` parts of a test or examination (none when no window is set)."""
    if window is None:
        return []
    duration = {"value": window.days, "unit": "d", "system": _UCUM, "code": "d"}
    label = f"{window.group_zh} {window.group}".strip()
    return [{"name": "window", "valueDuration": duration}, {"name": "group", "valueString": label}]


def _result_parts(
    observation: dict[str, Any], window: Window | None, facility: str | None, now: datetime
) -> list[dict[str, Any]]:
    when = effective_instant(observation)
    parts: list[dict[str, Any]] = [
        {"name": "result", "valueReference": {"reference": f"Observation/{observation['id']}"}}
    ]
    if facility:
        parts.append({"name": "facility", "valueReference": {"reference": facility}})
    if when is not None:
        parts.append({"name": "date", "valueDateTime": when.isoformat()})
    parts += [{"name": "value", key: val} for key, val in observation.items() if key.startswith("value")]
    recognised = window is not None and when is not None and now - when <= timedelta(days=window.days)
    parts.append({"name": "recognised", "valueBoolean": recognised})
    return parts


def _coding(test: RequestedTest) -> dict[str, Any]:
    from rhip.fhir.terminology import lab_test

    coding: dict[str, Any] = (
        {"system": test.system, "code": test.code} if test.system else {"code": test.code}
    )
    known = lab_test(test.code) if test.system in (None, systems.LOINC) else None
    if known is not None:
        coding["display"] = known.name_zh
    return coding


def prior_results(
    tests: Sequence[RequestedTest],
    observations: Sequence[dict[str, Any]],
    windows: dict[str, Window],
    facility_of: FacilityOf,
    now: datetime,
) -> dict[str, Any]:
    """The Parameters answer: per test its code, window, and latest result with its verdict.

    Args:
        tests: the requested tests, in the order asked.
        observations: the resident's Observations the caller may see (any of the tests).
        windows: recognition windows by code (only lab tests' apply).
        facility_of: the facility of an Observation.
        now: the moment the windows are measured from (aware).
    """
    params = []
    for test in tests:
        window = windows.get(test.code) if test.system in (None, systems.LOINC) else None
        window = window if window is not None and window.kind == "lab" else None
        latest = latest_of(observations, test)
        parts = [{"name": "code", "valueCoding": _coding(test)}, *window_parts(window)]
        parts.append({"name": "found", "valueBoolean": latest is not None})
        if latest is not None:
            parts += _result_parts(latest, window, facility_of(latest), now)
        params.append({"name": "test", "part": parts})
    return {"resourceType": "Parameters", "parameter": params}
