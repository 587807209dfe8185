"""One exception hierarchy for the whole platform.

Every module raises these; each edge translates them once: the API into an OperationOutcome with
the right HTTP status, the HL7 listener into an ACK AE/AR, the CLI into an exit code and a message.
Messages name files, lines, element paths and rules, never patient data.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Issue:
    """One problem found in a request or a record (maps to OperationOutcome.issue)."""

    severity: str  # fatal | error | warning | information
    code: str  # FHIR issue-type code: invalid, structure, required, value, not-found, ...
    diagnostics: str
    expression: tuple[str, ...] = ()


@dataclass
class RhipError(Exception):
    """Base error. ``status`` is the HTTP status the API answers with."""

    diagnostics: str
    code: str = "processing"
    status: int = 400
    expression: tuple[str, ...] = ()
    issues: list[Issue] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.diagnostics)

    def all_issues(self) -> list[Issue]:
        """The issues to report: the explicit list, or one built from this error."""
        if self.issues:
            return list(self.issues)
        return [Issue("error", self.code, self.diagnostics, self.expression)]


class InvalidResource(RhipError):
    """The resource is structurally invalid (422 unless told otherwise)."""

    def __init__(self, diagnostics: str, issues: list[Issue] | None = None, status: int = 422):
        super().__init__(diagnostics, code="invalid", status=status, issues=issues or [])


class InvalidRequest(RhipError):
    """The request itself is malformed or uses something unsupported (400)."""

    def __init__(self, diagnostics: str, code: str = "invalid", expression: tuple[str, ...] = ()):
        super().__init__(diagnostics, code=code, status=400, expression=expression)


class NotSupported(RhipError):
    """A valid FHIR feature this server does not implement (501 by default)."""

    def __init__(self, diagnostics: str, status: int = 501):
        super().__init__(diagnostics, code="not-supported", status=status)


class ResourceNotFound(RhipError):
    """No such resource or version (404)."""

    def __init__(self, diagnostics: str):
        super().__init__(diagnostics, code="not-found", status=404)


class ResourceGone(RhipError):
    """The resource was deleted (410)."""

    def __init__(self, diagnostics: str):
        super().__init__(diagnostics, code="deleted", status=410)


class VersionConflict(RhipError):
    """If-Match did not match the current version, or a concurrent write won (409/412)."""

    def __init__(self, diagnostics: str, status: int = 412):
        super().__init__(diagnostics, code="conflict", status=status)


class MultipleMatches(RhipError):
    """A conditional operation matched more than one resource (412)."""

    def __init__(self, diagnostics: str):
        super().__init__(diagnostics, code="multiple-matches", status=412)


class Forbidden(RhipError):
    """Authenticated but not allowed (403)."""

    def __init__(self, diagnostics: str):
        super().__init__(diagnostics, code="forbidden", status=403)


class Unauthorized(RhipError):
    """Not authenticated (401)."""

    def __init__(self, diagnostics: str):
        super().__init__(diagnostics, code="login", status=401)


class FieldKeyError(RhipError):
    """A stored encrypted field cannot be decrypted with the keys at hand (500).

    The keys under ``<data_dir>/keys`` are missing a version or are not the ones the data was
    written with (another ``RHIP_DATA_DIR``), or the stored value was altered.
    """

    def __init__(self, diagnostics: str):
        super().__init__(diagnostics, code="security", status=500)


class ConfigurationError(RhipError):
    """A setting (``RHIP_*`` variable, ``.env`` entry or option) cannot be used (500).

    The message names the setting and what it expects, so the operator fixes it where it is set.
    """

    def __init__(self, diagnostics: str):
        super().__init__(diagnostics, code="exception", status=500)
