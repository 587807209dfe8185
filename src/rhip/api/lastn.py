"""``Observation/$lastn``: a resident's most recent N Observations of each test, across facilities.

FHIR R4 defines the operation (http://hl7.org/fhir/R4/observation-operation-lastn.html): the request
names a subject (``patient`` or ``subject``) and a ``category`` and/or ``code``; the other
Observation search parameters filter as usual; the matches are grouped by ``Observation.code``
(two codes are the same test when they share a coding ``system|code``, codes with several codings
join every group they touch, text-only codes group by their text) and each group keeps its ``max``
most recent by ``effective[x]``. The Bundle lists the groups one after the other, newest first
within each group.

A resident of the region has one Patient per facility, linked by the MPI (:mod:`rhip.mpi`); the
results of all of them count, as ``Patient/$everything`` gathers them
(:func:`rhip.api.everything.linked_patients`). The search runs as the caller
(:func:`rhip.api.access.search`), so a result the policy hides is neither returned nor counted
among the N of its group. The pure functions here (grouping, ordering) take no store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rhip.errors import InvalidRequest
from rhip.fhir.primitives import is_ascii_digits

if TYPE_CHECKING:
    from rhip.store import Store
    from rhip.store.search import SearchResult

#: Upper bound on the matches one $lastn gathers before grouping (as ``$everything``'s bound).
MAX_MATCHES = 20_000
_PAGE = 1000
#: Parameters of the request that are not Observation search criteria.
_CONTROLS = frozenset({"max", "_mdm", "_format", "_pretty"})
#: Search controls that have no meaning for $lastn (the grouping decides order and size).
_REFUSED = frozenset({"_count", "_offset", "_sort", "_include", "_revinclude", "_total", "_summary"})
_SUBJECT_PARAMS = ("patient", "subject")
_CODE_PARAMS = ("code", "category", "code-value-concept", "combo-code", "combo-code-value-concept")

#: Runs one page of an Observation search as the caller: (params, count, offset) -> result.
Searcher = Callable[[list[tuple[str, str]], int, int], "SearchResult"]


@dataclass
class LastnQuery:
    """A parsed ``$lastn`` request: who, how many per group, and the remaining search criteria."""

    patients: list[str]
    max: int = 1
    criteria: list[tuple[str, str]] = field(default_factory=list)
    resident: bool = True


def parse_max(value: str) -> int:
    """``max``: a FHIR positiveInt (1 or more)."""
    digits = value.strip()
    if not is_ascii_digits(digits) or int(digits) < 1:
        raise InvalidRequest(f"max: expected a positive integer, got '{value[:20]}'", expression=("max",))
    return int(digits)


def _patient_ids(name: str, value: str) -> list[str]:
    """The Patient ids of a ``patient``/``subject`` value (``Patient/1``, ``1``, comma-separated)."""
    ids = []
    for item in value.split(","):
        ref = item.strip()
        if ref.startswith("Patient/"):
            ref = ref[len("Patient/") :]
        if not ref or "/" in ref:
            raise InvalidRequest(
                f"{name}: $lastn takes Patient references (Patient/[id]), got '{item.strip()[:40]}'",
                expression=(name,),
            )
        ids.append(ref)
    return ids


def parse_lastn(pairs: Iterable[tuple[str, str]], known: Callable[[str], bool]) -> LastnQuery:
    """Split a request's parameters; 400 naming the parameter that is missing, malformed or unknown.

    Args:
        pairs: the query (and body) parameters.
        known: whether a parameter name (modifier stripped) is an Observation search parameter.
    """
    from rhip.api.everything import parse_mdm

    query = LastnQuery(patients=[])
    has_code = False
    for name, value in pairs:
        base = name.split(":", 1)[0]
        if name == "max":
            query.max = parse_max(value)
        elif name == "_mdm":
            query.resident = parse_mdm(value)
        elif name in _CONTROLS:
            continue
        elif base in _REFUSED or not known(base):
            raise InvalidRequest(f"{name}: unknown $lastn parameter", expression=(name,))
        elif name in _SUBJECT_PARAMS:
            query.patients += _patient_ids(name, value)
        else:
            has_code = has_code or base in _CODE_PARAMS
            query.criteria.append((name, value))
    if not query.patients:
        raise InvalidRequest(
            "patient: $lastn needs a patient (or subject) parameter", expression=("patient",)
        )
    if not has_code:
        raise InvalidRequest("code: $lastn needs a category and/or code parameter", expression=("code",))
    return query


def resident_ids(store: Store, patient_ids: Sequence[str], *, resident: bool) -> list[str]:
    """The Patient ids whose results count: the ones asked for and, with ``resident``, their MPI links."""
    from rhip.api.everything import linked_patients

    ids = list(dict.fromkeys(patient_ids))
    if resident:
        for pid in list(ids):
            ids += [str(p["id"]) for p in linked_patients(store, pid) if str(p["id"]) not in ids]
    return ids


def gather(
    search: Searcher,
    patient_ids: Sequence[str],
    criteria: list[tuple[str, str]],
    *,
    res_type: str = "Observation",
) -> list[dict[str, Any]]:
    """Every resource (of the searcher's type) of these Patients matching ``criteria`` that the
    searcher lets through.

    Raises:
        InvalidRequest: (too-costly) more than :data:`MAX_MATCHES` matches.
    """
    target = ",".join(f"Patient/{pid}" for pid in patient_ids)
    params = [("patient", target), *criteria]
    found: list[dict[str, Any]] = []
    offset = 0
    while True:
        result = search(params, _PAGE, offset)
        found += result.matches
        if len(found) > MAX_MATCHES:
            raise InvalidRequest(
                f"more than {MAX_MATCHES} matching {res_type} resources of the resident; "
                "narrow with code or date",
                code="too-costly",
            )
        if not result.has_next or not result.matches:
            return found
        offset += _PAGE


def code_keys(observation: dict[str, Any]) -> list[str]:
    """The keys an Observation's code groups on: ``system|code`` of each coding, else its text."""
    concept = observation.get("code") or {}
    keys = [
        f"{c.get('system', '')}|{c['code']}"
        for c in concept.get("coding") or []
        if isinstance(c, dict) and c.get("code")
    ]
    if keys:
        return keys
    text = concept.get("text")
    return [f"text:{text}"] if text else [f"none:{observation.get('id')}"]


def effective_instant(observation: dict[str, Any]) -> datetime | None:
    """When an Observation was made: ``effective[x]`` (a Period's end, else start), else ``issued``."""
    period = observation.get("effectivePeriod") or {}
    for stamp in (
        observation.get("effectiveDateTime"),
        observation.get("effectiveInstant"),
        period.get("end"),
        period.get("start"),
        observation.get("issued"),
    ):
        if isinstance(stamp, str) and stamp:
            return parse_instant(stamp)
    return None


def parse_instant(stamp: str) -> datetime | None:
    """A FHIR date/dateTime/instant as an aware datetime (partial dates at their first moment)."""
    text = stamp.replace("Z", "+00:00")
    if len(text) == 4:
        text += "-01-01"
    elif len(text) == 7:
        text += "-01"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def group_by_code(observations: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Groups of the same test, by the transitive equality of their codings (union-find on keys)."""
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for obs in observations:
        keys = code_keys(obs)
        for key in keys[1:]:
            parent[root(key)] = root(keys[0])
        root(keys[0])
    groups: dict[str, list[dict[str, Any]]] = {}
    for obs in observations:
        groups.setdefault(root(code_keys(obs)[0]), []).append(obs)
    members: dict[str, set[str]] = {}
    for key in parent:
        members.setdefault(root(key), set()).add(key)
    ordered = sorted(groups, key=lambda r: min(members[r]))
    return [groups[r] for r in ordered]


_OLDEST = datetime.min.replace(tzinfo=UTC)


def newest_first(observations: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Most recent ``effective[x]`` first; undated last; ties by last update, then id (stable)."""

    def key(obs: dict[str, Any]) -> tuple[datetime, str, str]:
        updated = str((obs.get("meta") or {}).get("lastUpdated", ""))
        return effective_instant(obs) or _OLDEST, updated, str(obs.get("id"))

    return sorted(observations, key=key, reverse=True)


def last_n(observations: Sequence[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """The ``n`` most recent of each code group, groups one after the other (the $lastn answer)."""
    out: list[dict[str, Any]] = []
    for group in group_by_code(observations):
        out += newest_first(group)[:n]
    return out
