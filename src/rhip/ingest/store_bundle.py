"""Bundles that need server logic, processed by the store's own bundle processing.

A bundle with conditional references, ``ifNoneExist``, ``ifMatch``, DELETE or GET cannot be
flattened into the bulk write (:mod:`rhip.ingest.fhir_files`); the store processes it in a
transaction of its own, before the chunk's (docs/ingest.md: its Provenance and delivery key commit
with the chunk). What it wrote becomes the record's Provenance targets; what it refused becomes
the record's quarantine reasons.
"""

from __future__ import annotations

from typing import Any

from rhip.errors import RhipError
from rhip.ingest.prepare import at_entry, reasons_of


def apply_bundle(
    store: Any, bundle: dict[str, Any], first: int = 0
) -> tuple[list[dict[str, Any]] | None, list[dict[str, str]]]:
    """Process a bundle needing server logic through the store's bundle processing.

    Returns the resources it wrote (type and id), or None and the quarantine reasons when
    the store refused the bundle (a transaction) or its entry (a batch's entry is a record of
    its own, see :func:`rhip.ingest.fhir_files.iter_bundle_files`; ``first`` is its index).
    """
    try:
        response = store.process_bundle(bundle)
    except RhipError as exc:
        return None, at_entry(reasons_of(exc.all_issues()), first)
    found: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    for n, entry in enumerate(response.get("entry", [])):
        answer = entry.get("response") or {}
        if not str(answer.get("status", "")).startswith(("2", "3")):
            failed.extend(_entry_reasons(n, answer))
            continue
        parts = str(answer.get("location", "")).split("/")
        if len(parts) >= 2 and parts[0] and parts[1]:
            found.append({"resourceType": parts[0], "id": parts[1]})
    return (None, at_entry(failed, first)) if failed else (found, [])


def _entry_reasons(index: int, answer: dict[str, Any]) -> list[dict[str, str]]:
    """Quarantine reasons of a failed batch entry, from the OperationOutcome of its response."""
    issues = (answer.get("outcome") or {}).get("issue") or []
    found = [
        {
            "rule": str(i.get("code") or "processing"),
            "path": f"Bundle.entry[{index}]" + "".join(f" {e}" for e in (i.get("expression") or [])[:1]),
            "message": str(i.get("diagnostics") or "entry failed"),
            "severity": "error",
        }
        for i in issues
        if isinstance(i, dict) and i.get("severity") in ("error", "fatal")
    ]
    status = str(answer.get("status", ""))
    return found or [
        {"rule": "processing", "path": f"Bundle.entry[{index}]", "message": status, "severity": "error"}
    ]
