"""The security runtime of one API app: keys, policy, audit writer, and the three access hooks.

:mod:`rhip.api.access` hands every interaction to the runtime found on the request context
(``ctx.extra["security"]``), put there by the authentication middleware. Holding the runtime on
the app rather than in module globals lets tests run several apps side by side.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from rhip.errors import Forbidden, ResourceGone, ResourceNotFound, Unauthorized
from rhip.security.audit import AuditRecord, AuditWriter
from rhip.security.facility import FacilityGuard, bound_facility
from rhip.security.keys import KEY_KINDS, KeyRing
from rhip.security.levels import type_level
from rhip.security.policy import ROLES, WRITE, Policy, check_interaction
from rhip.security.relations import Relations
from rhip.security.schema import ensure_schema
from rhip.security.tokens import Principal, TokenVerifier

if TYPE_CHECKING:
    from rhip.api.access import RequestContext
    from rhip.config import Settings
    from rhip.store import Store
    from rhip.store.guard import WriteCheck, WriteGuard
    from rhip.store.search import SearchResult

logger = logging.getLogger(__name__)
#: Instance-level interactions whose current resource must be visible to a restricted caller.
_INSTANCE_GUARDED = frozenset({"vread", "history-instance", "update", "patch", "delete", "operation"})
#: Raw matches (bodies) a restricted caller's search reads per window while filtering.
RESTRICTED_WINDOW = 2000
#: Largest Patient-id list a practitioner's search is narrowed to in SQL (else filtered only).
NARROW_MAX = 1000
#: Raw matches a restricted search tests for its total unless ``_total=accurate`` asks for every
#: one: a larger result answers its page without ``Bundle.total`` (FHIR leaves the default to the
#: server), because counting what a caller may see means decoding and testing every match.
TOTAL_SCAN_MAX = 1000
#: Parameters that shape the answer rather than select matches (handled after filtering).
_SHAPING = frozenset({"_summary", "_total", "_include", "_revinclude"})
#: Parameters that already pin a search to a few residents (narrowing adds nothing but cost).
_PINNED = frozenset({"_id", "patient", "subject"})


def _total_budget(params: list[tuple[str, str]], count: int) -> int | None:
    """Raw matches a restricted search may test for its total (see :data:`TOTAL_SCAN_MAX`).

    ``_total=accurate`` and ``_summary=count`` (asked with no page) count every match;
    ``_total=none`` counts none; the default and ``_total=estimate`` count up to the budget.
    """
    asked = next((v for n, v in reversed(params) if n == "_total"), None)
    if asked == "accurate" or count == 0:
        return None
    return 0 if asked == "none" else TOTAL_SCAN_MAX


class SecurityRuntime:
    """Keys, policy and the audit writer of one app."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.keys = KeyRing(settings.data_dir)
        for kind in KEY_KINDS:  # generated on first start, never shipped
            self.keys.current(kind)
        self.tokens = TokenVerifier(self.keys)
        ensure_schema(store.engine)
        self.relations = Relations(store)
        self.policy = Policy(self.relations)
        self._writer: AuditWriter | None = None

    @property
    def writer(self) -> AuditWriter:
        """The audit writer (its thread starts on first use)."""
        if self._writer is None:
            self._writer = AuditWriter(self.store.engine)
        return self._writer

    def close(self) -> None:
        """Flush the audit queue and stop the writer."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # -- the hooks -------------------------------------------------------------------------
    @staticmethod
    def principal(ctx: RequestContext) -> Principal:
        """The authenticated principal of a request; Unauthorized when there is none."""
        principal = ctx.extra.get("principal")
        if not isinstance(principal, Principal):
            raise Unauthorized("authentication required: send 'Authorization: Bearer <token>'")
        return principal

    def authorize(
        self,
        ctx: RequestContext,
        interaction: str,
        res_type: str | None,
        res_id: str | None,
        resource: dict[str, Any] | None,
    ) -> None:
        """Refuse with Forbidden/Unauthorized what the policy does not allow."""
        if interaction == "capabilities":
            return
        principal = self.principal(ctx)
        check_interaction(principal, interaction, res_type)
        if res_type and res_id and interaction in _INSTANCE_GUARDED and self.restricted(ctx):
            self._guard_instance(principal, interaction, res_type, res_id)
        if interaction in WRITE or interaction in ("delete",):
            self.policy.check_write(principal, res_type, resource)
        if res_type == "Patient" and res_id and interaction == "operation":
            ctx.extra.setdefault("patients", set()).add(res_id)

    def _guard_instance(self, principal: Principal, interaction: str, res_type: str, res_id: str) -> None:
        """The current version must be visible (404 otherwise) and, for writes, writable by the caller."""
        try:
            current = self.store.read(res_type, res_id)
        except (ResourceNotFound, ResourceGone):
            return  # update-as-create, or the API answers 404/410 itself
        if not self.policy.can_see(principal, current):
            if interaction in ("vread", "history-instance", "operation"):
                raise ResourceNotFound(f"{res_type}/{res_id} is not available")
            raise Forbidden(f"{res_type}/{res_id}: not visible to this caller")
        if interaction in WRITE or interaction == "delete":
            self.policy.check_write(principal, res_type, current)

    def write_guard(self, ctx: RequestContext) -> WriteGuard | None:
        """The facility check for a ``system`` account bound to an organisation; None for others.

        The store calls it with the version it already read for the write, so an update costs no
        extra read; a create is checked on its body alone (see :mod:`rhip.security.facility`).
        """
        principal = ctx.extra.get("principal")
        own = bound_facility(principal) if isinstance(principal, Principal) else None
        if principal is None or own is None:
            return None

        def note(check: WriteCheck, error: Forbidden) -> None:
            ctx.extra.setdefault("write_refusals", []).append(check)
            if check.res_id and ctx.extra.get("interaction") not in ("batch", "transaction"):
                ctx.extra["entities"] = [(check.res_type, check.res_id)]  # a conditional write's target

        return FacilityGuard(self.relations, principal, own, on_refusal=note)

    def restricted(self, ctx: RequestContext) -> bool:
        """True when this caller sees a filtered subset of the store (totals must be recounted)."""
        principal = ctx.extra.get("principal")
        role = ROLES.get(principal.role) if isinstance(principal, Principal) else None
        return role is None or role.relation != "all"

    def filter_results(
        self, ctx: RequestContext, resources: Sequence[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """The resources this caller may see; records the residents they concern for the audit."""
        principal = self.principal(ctx)
        patients: set[str] = ctx.extra.setdefault("patients", set())
        full = not self.restricted(ctx)
        # resources already passed in this request (held, so their id() cannot be reused)
        cleared: dict[int, dict[str, Any]] = ctx.extra.setdefault("_cleared", {})
        shown = []
        for resource in resources:
            if full or cleared.get(id(resource)) is resource or self.policy.can_see(principal, resource):
                cleared[id(resource)] = resource
                shown.append(resource)
                patient = self.relations.patient_of(resource)
                if patient:
                    patients.add(patient)
            elif len(resources) == 1:  # a refused instance read: the resident sees the attempt
                refused = self.relations.patient_of(resource)
                if refused:
                    ctx.extra.setdefault("refused_patients", set()).add(refused)
        return shown

    def search(
        self,
        ctx: RequestContext,
        res_type: str | None,
        params: list[tuple[str, str]],
        *,
        count: int,
        offset: int,
    ) -> SearchResult:
        """A search whose matches, includes and total count only what the caller may see."""
        from rhip.store.search import SearchResult

        if not self.restricted(ctx):
            result = self.store.search(res_type, params, count=count, offset=offset)
            result.matches = self.filter_results(ctx, result.matches)
            result.includes = self.filter_results(ctx, result.includes)
            return result
        for name, _ in params:
            if name.startswith("_has:") or "." in name:
                # the condition would be tested on records the caller may not see (side channel)
                raise Forbidden(f"{name.split(':')[0]}: _has and chained parameters need full access")
        if type_level(res_type) == 1:  # published conformance resources: visible to every role
            result = self.store.search(res_type, params, count=count, offset=offset)
            result.matches = self.filter_results(ctx, result.matches)
            result.includes = self.filter_results(ctx, result.includes)
            return result
        principal = self.principal(ctx)
        plain = [(n, v) for n, v in params if n.split(":", 1)[0] not in _SHAPING]
        plain = self._narrow_to_care(principal, res_type, self._narrow_to_own(principal, res_type, plain))
        page, total, has_next = self._scan(
            principal, res_type, plain, count, offset, _total_budget(params, count)
        )
        page = self.filter_results(ctx, page)
        includes = self._includes(ctx, res_type, page, params)
        return SearchResult(total, page, includes, offset, len(page), has_next)

    def _scan(
        self,
        principal: Principal,
        res_type: str | None,
        params: list[tuple[str, str]],
        count: int,
        offset: int,
        budget: int | None,
    ) -> tuple[list[dict[str, Any]], int | None, bool]:
        """Test the raw matches window by window, keep one page of visible ones and count them.

        The total is exact because every match is tested, but the testing stops, leaving the total
        unknown (None), once the page and the existence of a next page are known and ``budget``
        raw matches were tested (None: no limit, 0: stop at once).
        """
        page: list[dict[str, Any]] = []
        visible, tested, start, end = 0, 0, offset, offset + count
        role = ROLES[principal.role]
        consent = role.relation == "care" and role.consent_applies
        area = principal.area if role.relation == "area" else None
        for window in self._windows(res_type, params):
            if consent or area:
                patients = {self.relations.patient_of(r) or "" for r in window}
                self.relations.prefetch(patients, consent=consent, area=area)
            for resource in window:
                tested += 1
                if not self.policy.can_see(principal, resource):
                    continue
                if start <= visible < end:
                    page.append(resource)
                visible += 1
                if visible > end and budget is not None and tested >= budget:
                    return page, None, True
        return page, None if budget == 0 else visible, visible > end

    def _windows(self, res_type: str | None, params: list[tuple[str, str]]) -> Iterator[list[dict[str, Any]]]:
        """The raw matches in search order, RESTRICTED_WINDOW bodies at a time.

        The first window is one ordinary search. When there is more, the ids of all matches are
        read (one query, no bodies; a few dozen bytes per match) and the other bodies fetched by id,
        window by window: reading windows by offset instead re-runs the search for every window,
        which costs 2-5x more on a large result. With ``_sort`` the windows are read by offset.
        """
        size = max(1, RESTRICTED_WINDOW)
        by_offset = any(name == "_sort" for name, _ in params)
        at = 0
        while True:  # the first window (most searches have only one) and, with _sort, the others
            raw = self.store.search(res_type, [*params, ("_total", "none")], count=size, offset=at)
            yield raw.matches
            at += size
            if not raw.has_next:
                return
            if not by_offset and res_type is not None:
                break
        if res_type is None:  # unreachable: only the offset loop serves system searches
            return
        # an always-true condition, so that a search without filters still matches everything
        ids = self.store.matching_ids(res_type, [*params, ("_lastUpdated", "gt1970-01-01")])
        for at in range(size, len(ids), size):
            chunk = ids[at : at + size]
            found = self.store.search(
                res_type, [("_id", ",".join(chunk)), ("_total", "none")], count=len(chunk)
            )
            yield found.matches

    def _narrow_to_own(
        self, principal: Principal, res_type: str | None, params: list[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        """Push a resident's own-records rule into the SQL search (their records at every facility).

        Without it a resident's search would scan the whole region's matches to keep only theirs.
        The policy filter still runs on the narrowed result, so this can only drop records the
        resident may not see anyway (those of a type that names no patient at all).
        """
        from rhip.fhir.search_params import search_params_for

        if principal.role != "resident" or not principal.patient:
            return params
        own = ",".join(sorted(self.relations.own_records(principal.patient)))
        if res_type == "Patient":
            return [*params, ("_id", own)]
        if res_type and "patient" in search_params_for(res_type):
            return [*params, ("patient", own)]  # bare ids: one IN list on target_id
        return params

    def _narrow_to_care(
        self, principal: Principal, res_type: str | None, params: list[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        """Push a practitioner's relationships into SQL: only records of residents they may relate to.

        The set (direct relationships, expanded over MPI links, plus a break-the-glass resident) is
        a superset of what the policy lets through, so nothing visible is lost. Above
        NARROW_MAX ids the search is left as it is and the scan filters it alone (exact, slower).
        """
        from rhip.fhir.search_params import search_params_for

        if principal.role != "practitioner" or not res_type:
            return params
        if any(n.split(":", 1)[0] in _PINNED for n, _ in params):
            return params  # already one or a few residents' records: the list would only cost
        if res_type != "Patient" and "patient" not in search_params_for(res_type):
            return params
        ids = self.relations.care_patients(principal)
        if ids is None or len(ids) > NARROW_MAX:
            return params
        glass = (principal.break_glass or {}).get("patient")
        wanted = sorted(ids | ({str(glass)} if glass and principal.glass_for(str(glass)) else set()))
        if not wanted:
            wanted = ["-"]  # no resident at all: a value no id takes, so the search finds nothing
        if res_type == "Patient":
            return [*params, ("_id", ",".join(wanted))]
        return [*params, ("patient", ",".join(wanted))]  # bare ids: one IN list on target_id

    def _includes(
        self,
        ctx: RequestContext,
        res_type: str | None,
        page: list[dict[str, Any]],
        params: list[tuple[str, str]],
    ) -> list[dict[str, Any]]:
        """``_include``/``_revinclude`` of the page's resources only, filtered for the caller."""
        asked = [(n, v) for n, v in params if n.split(":", 1)[0] in ("_include", "_revinclude")]
        if not asked or not page or not res_type:
            return []
        ids = ",".join(str(r.get("id")) for r in page)
        found = self.store.search(res_type, [("_id", ids), ("_total", "none"), *asked], count=len(page))
        return self.filter_results(ctx, found.includes)

    def audit(
        self, ctx: RequestContext, interaction: str, outcome: str, entities: Sequence[tuple[str, str]]
    ) -> None:
        """Queue one audit record for the chain."""
        principal = ctx.extra.get("principal")
        patients = set(ctx.extra.get("patients") or ())
        if outcome != "0":
            patients.update(ctx.extra.get("refused_patients") or ())
        patients.update(str(i) for t, i in entities if t == "Patient" and i)
        names = [f"{t}/{i}" if i else str(t) for t, i in entities if t]
        glass = isinstance(principal, Principal) and any(principal.glass_for(p) for p in patients)
        record = AuditRecord(
            actor=principal.sub if isinstance(principal, Principal) else "anonymous",
            role=principal.role if isinstance(principal, Principal) else "",
            action=interaction,
            outcome=outcome,
            entities=names,
            patients=sorted(patients),
            purpose="ETREAT" if glass else str(ctx.extra.get("purpose", "TREAT")),
            source=ctx.client,
            request_id=ctx.request_id,
            path=ctx.path,
            break_glass=glass,
        )
        self.writer.submit(record)
        changes = interaction in ("create", "update", "patch", "delete")
        consent = any(t == "Consent" for t, _ in entities)
        relink = str(ctx.path or "").startswith("/mpi/") and outcome == "0"  # links moved: groups differ
        if changes and (consent or relink):
            self.relations.forget_all()

    def record(self, record: AuditRecord) -> None:
        """Queue a record made outside the FHIR routes (logins, break-the-glass, denials)."""
        self.writer.submit(record)


def forbid(reason: str) -> None:
    """Raise Forbidden with a reason (helper for routers of this module)."""
    raise Forbidden(reason)
