"""The small value types every connector and the pipeline share.

A connector turns its input into :class:`Record` objects (one per delivered unit: an NDJSON line, a
bundle, an HL7 message, a CSV row, a DICOM file, a device reading) and a mapper turns a record into
FHIR resources. Keeping the verbatim bytes on the record is what lets quarantine replay it later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rhip.errors import Issue, RhipError

#: Longest facility code the ingest and quality tables hold (their ``facility`` columns).
FACILITY_MAX = 64


@dataclass(frozen=True)
class SourceInfo:
    """Where a batch comes from: the facility, the connector and the file or peer.

    A facility code longer than :data:`FACILITY_MAX` (an MSH-4 of 100 characters, a long URL
    segment) is cut to that length: PostgreSQL refuses a longer one in the batch, quarantine and
    quality rows, which failed the whole chunk (over MLLP: every message of the batch, each time
    it was resent). Records are kept under the shortened code. For the same reason a NUL or other
    control character (an MSH-4 of ``\x00``) becomes U+FFFD, the replacement character.
    """

    facility: str
    connector: str
    location: str = ""

    def __post_init__(self) -> None:
        facility = self.facility
        if not facility.isprintable():
            facility = "".join(c if c >= " " else "\ufffd" for c in facility)
        if len(facility) > FACILITY_MAX:
            facility = facility[:FACILITY_MAX]
        if facility is not self.facility:
            object.__setattr__(self, "facility", facility)


@dataclass
class Record:
    """One delivered unit, kept verbatim.

    ``key`` is the idempotency key (message control id or content hash); ``position`` names the
    place in the source (``file.ndjson:12``, ``MSH-10=...``); ``context`` holds what the mapper
    needs besides the bytes (e.g. the CSV header and mapping name) and is stored with quarantine.
    """

    raw: bytes
    position: str
    key: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    source: SourceInfo | None = None  # overrides the batch's source (MLLP: the sender's MSH-4)


@dataclass
class Mapped:
    """A record mapped to FHIR: its resources, when the event happened and non-fatal findings."""

    resources: list[dict[str, Any]]
    event_time: float | None = None
    warnings: list[Issue] = field(default_factory=list)
    merge: tuple[str, str] | None = None  # (survivor ref, merged ref) for ADT^A40
    bundle: dict[str, Any] | None = None  # a bundle that needs the store's transaction processing
    #: Index in the delivered bundle of ``bundle``'s first entry (a batch entry mapped on its own):
    #: the reasons of the validator and the store, which count from 0, are moved to it.
    entry: int = 0
    ordered: bool = False  # True: refuse updates older (event_time) than what is stored
    #: Per-resource source times (same order as ``resources``) when they differ within a record
    #: (a bundle's resources each carry their own ``meta.lastUpdated``); None: ``event_time``.
    times: list[float | None] | None = None

    def source_times(self) -> list[float | None]:
        """The source time of each resource (None: that resource is not ordered)."""
        if self.times is not None:
            return self.times
        return [self.event_time] * len(self.resources)


class MappingError(RhipError):
    """A record could not be parsed or mapped; ``issues`` name element path and rule."""

    def __init__(self, diagnostics: str, issues: list[Issue] | None = None):
        super().__init__(diagnostics, code="structure", status=422, issues=issues or [])


def issue(rule: str, path: str, message: str, severity: str = "error") -> Issue:
    """An :class:`Issue` whose code is the rule name and whose expression is the element path."""
    return Issue(severity, rule, message, (path,) if path else ())


@dataclass
class BatchReport:
    """Reconciliation counts of one batch: ``received == stored + quarantined + duplicates + stale``."""

    batch_id: str
    source: SourceInfo
    received: int = 0
    stored: int = 0
    quarantined: int = 0
    duplicates: int = 0
    stale: int = 0
    resources_written: int = 0

    @property
    def reconciled(self) -> bool:
        """True when every received record is accounted for."""
        return self.received == self.stored + self.quarantined + self.duplicates + self.stale

    def add(self, other: BatchReport) -> None:
        """Add another report's counts into this one."""
        self.received += other.received
        self.stored += other.stored
        self.quarantined += other.quarantined
        self.duplicates += other.duplicates
        self.stale += other.stale
        self.resources_written += other.resources_written
