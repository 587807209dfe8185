"""Validation of mapped resources before they are stored.

Uses the platform validator (:func:`rhip.fhir.validation.validate_resource`) when it is present;
the structural checks below always run first because they are cheap and catch what would break
storage (missing resourceType, bad id).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from rhip.errors import Issue
from rhip.ingest.model import issue

_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")

Validator = Callable[[dict[str, Any]], list[Issue]]


def _platform_validator() -> Validator | None:
    try:
        from rhip.fhir.validation import validate_resource
    except ImportError:
        return None
    return validate_resource


def structural_issues(resource: Any) -> list[Issue]:
    """Problems that make a resource unstorable: not an object, no/odd resourceType, bad id."""
    if not isinstance(resource, dict):
        return [issue("structure", "", "resource is not a JSON object")]
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not _TYPE.match(rtype):
        return [issue("structure", "resourceType", "missing or malformed resourceType")]
    rid = resource.get("id")
    if rid is not None and (not isinstance(rid, str) or not _ID.match(rid)):
        return [issue("id-format", f"{rtype}.id", "id is not a valid FHIR id")]
    return []


class ResourceValidator:
    """Structural checks plus the platform validator; returns only issues of severity error/fatal."""

    def __init__(self, validator: Validator | None = None, use_platform: bool = True) -> None:
        self._validator = validator or (_platform_validator() if use_platform else None)

    def errors(self, resource: Any) -> list[Issue]:
        """Blocking issues of one resource (empty when it may be stored)."""
        return structural_issues(resource) or self.content_errors(resource)

    def content_errors(self, resource: dict[str, Any]) -> list[Issue]:
        """Blocking issues of a resource that already passed :func:`structural_issues`.

        The ingest pipeline checks structure before canonicalising (which keeps resourceType and
        id, and only adds a valid id), so it asks for the rest alone instead of checking twice.
        """
        if self._validator is None:
            return []
        try:
            issues = self._validator(resource)
        except Exception as exc:  # a validator failure must not lose the record
            return [issue("validator-error", resource.get("resourceType", ""), type(exc).__name__)]
        if not issues:  # the usual case: no list to filter
            return []
        return [i for i in issues if i.severity in ("error", "fatal")]
