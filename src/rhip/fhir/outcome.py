"""OperationOutcome: the one way the platform reports problems in FHIR.

The API answers every error with one, ingest stores one next to each quarantined record, and both
build it here from ``rhip.errors`` (an ``RhipError`` or a list of ``Issue``), so the shape, the
severity ordering and the issue codes are the same everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from rhip.errors import Issue, RhipError

#: R4 IssueSeverity codes, most severe first.
SEVERITIES: Final = ("fatal", "error", "warning", "information")
#: R4 IssueType codes (http://hl7.org/fhir/issue-type); anything else is reported as ``processing``.
ISSUE_TYPES: Final = frozenset(
    {
        "invalid", "structure", "required", "value", "invariant", "security", "login", "unknown",
        "expired", "forbidden", "suppressed", "processing", "not-supported", "duplicate",
        "multiple-matches", "not-found", "deleted", "too-long", "code-invalid", "extension",
        "too-costly", "business-rule", "conflict", "transient", "lock-error", "no-store",
        "exception", "timeout", "incomplete", "throttled", "informational",
    }
)  # fmt: skip


def _issue_json(issue: Issue) -> dict[str, Any]:
    severity = issue.severity if issue.severity in SEVERITIES else "error"
    out: dict[str, Any] = {
        "severity": severity,
        "code": issue.code if issue.code in ISSUE_TYPES else "processing",
    }
    if issue.diagnostics:
        out["diagnostics"] = issue.diagnostics
    if issue.expression:
        out["expression"] = list(issue.expression)
    return out


def operation_outcome(
    problem: RhipError | Iterable[Issue], *, outcome_id: str | None = None
) -> dict[str, Any]:
    """Build an R4 OperationOutcome (JSON dict) from an error or from issues.

    Issues are ordered most severe first (stable otherwise). An empty list gives the single
    ``information`` issue R4 requires (``issue`` is 1..*), meaning "all OK".

    Args:
        problem: an ``RhipError`` (its ``all_issues()`` are used) or an iterable of ``Issue``.
        outcome_id: optional resource id (ingest quarantine stores outcomes as resources).
    """
    issues = problem.all_issues() if isinstance(problem, RhipError) else list(problem)
    rank = {severity: index for index, severity in enumerate(SEVERITIES)}
    issues.sort(key=lambda issue: rank.get(issue.severity, 1))
    outcome: dict[str, Any] = {"resourceType": "OperationOutcome"}
    if outcome_id is not None:
        outcome["id"] = outcome_id
    if issues:
        outcome["issue"] = [_issue_json(issue) for issue in issues]
    else:
        outcome["issue"] = [{"severity": "information", "code": "informational", "diagnostics": "All OK"}]
    return outcome


def issues_from_outcome(outcome: dict[str, Any]) -> list[Issue]:
    """The ``Issue`` objects of an OperationOutcome dict (the reverse of ``operation_outcome``)."""
    issues: list[Issue] = []
    for item in outcome.get("issue", []):
        issues.append(
            Issue(
                str(item.get("severity", "error")),
                str(item.get("code", "processing")),
                str(item.get("diagnostics", "")),
                tuple(item.get("expression", ())),
            )
        )
    return issues


def has_errors(issues: Iterable[Issue]) -> bool:
    """True when any issue is ``error`` or ``fatal`` (warnings and information do not reject)."""
    return any(issue.severity in ("error", "fatal") for issue in issues)
