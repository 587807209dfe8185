"""Preparing one record: map it, canonicalise and validate its resources (no I/O, no shared state).

:class:`RecordPreparer` is the CPU side of ingestion. The pipeline (:mod:`rhip.ingest.pipeline`)
runs it in its own process, or a producer process (:mod:`rhip.ingest.producer`, the MLLP
listener's :mod:`rhip.ingest.mllp_prepare`) runs it ahead of the writer; the same record gives the
same result either way. A record that cannot be used comes back as quarantine reasons (rule,
element path, message), never as an exception.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rhip.errors import Issue, RhipError
from rhip.ingest.canonical import Canonicaliser, ConceptTranslator
from rhip.ingest.lines import OVERLONG, size_reason
from rhip.ingest.model import Mapped, Record, issue
from rhip.ingest.provenance import source_uri, stable_id
from rhip.ingest.validate import ResourceValidator, structural_issues

if TYPE_CHECKING:
    from rhip.ingest.mappers import MapContext, MapFn

log = logging.getLogger(__name__)


def reasons_of(issues: Sequence[Issue]) -> list[dict[str, str]]:
    """Quarantine reasons (rule, element path, message) from issues."""
    return [
        {"rule": i.code, "path": ".".join(i.expression), "message": i.diagnostics, "severity": i.severity}
        for i in issues
    ]


def at_entry(reasons: list[dict[str, str]], first: int) -> list[dict[str, str]]:
    """Reasons whose ``Bundle.entry[n]`` (path and message) count from ``first``: a batch entry
    processed on its own is entry 0 of its bundle, and is named by its place in the delivered one."""
    if not first:
        return reasons

    def shift(text: str) -> str:
        return _ENTRY.sub(lambda m: f"Bundle.entry[{int(m.group(1)) + first}]", text)

    return [{**r, "path": shift(r.get("path", "")), "message": shift(r.get("message", ""))} for r in reasons]


_ENTRY = re.compile(r"Bundle\.entry\[(\d+)\]")


class RecordPreparer:
    """Maps one record and canonicalises and validates its resources (no I/O, no shared state).

    The pipeline runs it in its own process, or a producer process runs it ahead of the writer
    (:mod:`rhip.ingest.producer`); both give the same result for the same record.
    """

    def __init__(self, translator: ConceptTranslator, tz: str, validator: ResourceValidator) -> None:
        self.canonicaliser = Canonicaliser(translator, tz)
        self.validator = validator

    def map_record(
        self, rec: Record, key: str, ctx: MapContext, mapper: MapFn
    ) -> tuple[Mapped | None, list[dict[str, str]]]:
        """The record's mapped resources, or None and the quarantine reasons (``key``: record_key)."""
        overlong = rec.context.get(OVERLONG)
        if overlong:  # a line cut by the reader (rhip.ingest.lines): not mappable as it stands
            return None, [size_reason(int(overlong))]
        try:
            mapped = mapper(rec, ctx)
        except RhipError as exc:
            return None, reasons_of(exc.all_issues())
        except Exception as exc:  # a mapper bug must quarantine the record, not stop the pipeline
            log.warning("mapper failed at %s: %s", rec.position, type(exc).__name__)
            return None, [
                {"rule": "mapper-error", "path": "", "message": type(exc).__name__, "severity": "error"}
            ]
        if not mapped.resources and mapped.merge is None and mapped.bundle is None:
            return None, [
                {
                    "rule": "no-content",
                    "path": "",
                    "message": "record maps to no resource",
                    "severity": "error",
                }
            ]
        # a bundle for the store's processing is checked whole: the store does not validate entries
        problems: list[Issue] = [] if mapped.bundle is None else self.validator.errors(mapped.bundle)
        for i, res in enumerate(mapped.resources):
            found = structural_issues(res)
            if found:
                problems.extend(found)
                continue
            for f in self._canonical_findings(res, rec):
                (mapped.warnings if f.severity in ("warning", "information") else problems).append(f)
            if "id" not in res:
                res["id"] = stable_id(key, str(i))
            meta = res.setdefault("meta", {})
            if not isinstance(meta, dict):  # the source's own meta: null, a string, an array...
                problems.append(
                    issue("structure", f"{res['resourceType']}.meta", "meta is not a JSON object")
                )
                continue
            meta["source"] = source_uri(ctx.source, rec.position)
            problems.extend(self.validator.content_errors(res))
        if problems:
            return None, at_entry(reasons_of(problems), mapped.entry)
        return mapped, []

    def _canonical_findings(self, resource: dict[str, Any], rec: Record) -> list[Issue]:
        """The canonicaliser's findings; a failure of its own quarantines the record, never the run."""
        try:
            return self.canonicaliser.apply(resource)
        except Exception as exc:
            log.warning("canonicalisation failed at %s: %s", rec.position, type(exc).__name__)
            return [issue("canonicalise-error", resource.get("resourceType", ""), type(exc).__name__)]
