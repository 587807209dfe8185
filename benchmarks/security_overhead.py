"""Cost of authentication, authorisation and auditing on FHIR searches, measured in one run.

Seeds a SQLite store (residents, each with an Encounter at one of a few facilities and several
Observations), then serves it through three apps built by ``create_app`` over the same store:

* ``off``: ``auth_enabled=False`` (no token, no policy, no audit): the spine alone;
* ``admin``: token + policy + SM3-chained audit for a platform admin (full access, no filtering);
* ``practitioner``: token + policy for a practitioner whose facility cares for every third
  resident, so each search is narrowed to those residents in SQL, filtered by care relationship
  and consent, totals recounted exactly, and audited;
* ``public_health``: an officer of the residents' district, who sees only notifiable data (one
  laboratory Observation in five): nothing narrows the search, every match is filtered.

Two kinds of search: **narrow** (``Patient?_id=``, ``Observation?patient=``, a few matches) and
**broad** (``Observation?code=`` over every resident, first page of 20 with the exact total, which
for the restricted roles means filtering every match). Requests are interleaved (off, admin,
practitioner, public_health, off, ...) so load drift on a shared machine hits all alike; the table
gives p50/p95 latency and the ratios to ``off`` per kind.

``--writes`` measures writes instead: **create** (``POST Observation`` whose facility is found
through its Encounter) and **update** (``PUT Encounter/id``), all at facility org0, interleaved over
``off``, ``admin``, ``system`` (bound to no facility) and ``system_org0`` (a facility's feed bound
to org0, whose writes pass the facility check: on the body for a create, on the stored version the
update path reads anyway for an update).
``--opt-out`` (searches): every resident has opted out of cross-institution sharing (an active
Consent) and each laboratory result is performed by an outside laboratory (Organization/lab) in the
resident's Encounter, so the practitioner's filter decides for every record whether it is their
facility's own (the record's organisations, then its Encounter's).
Run: ``.venv/bin/python benchmarks/security_overhead.py [--patients 300] [--requests 300]
[--writes | --opt-out]``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def _opt_out(pid: str) -> dict[str, Any]:
    return {
        "resourceType": "Consent",
        "id": f"c{pid}",
        "status": "active",
        "scope": {"coding": [{"code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{pid}"},
        "provision": {"type": "deny"},
    }


def _seed(store: Any, patients: int, opt_out: bool = False) -> None:
    rows: list[dict[str, Any]] = [{"resourceType": "Organization", "id": f"org{i}"} for i in range(3)]
    rows.append({"resourceType": "Organization", "id": "lab"})
    for p in range(patients):
        pid = f"p{p}"
        rows.append(
            {"resourceType": "Patient", "id": pid, "gender": "female", "address": [{"district": "110105"}]}
        )
        if opt_out:
            rows.append(_opt_out(pid))
        rows.append(
            {
                "resourceType": "Encounter",
                "id": f"e{p}",
                "status": "finished",
                "class": {"code": "AMB"},
                "subject": {"reference": f"Patient/{pid}"},
                "serviceProvider": {"reference": f"Organization/org{p % 3}"},
            }
        )
        for o in range(5):
            category = "laboratory" if o == 0 else "vital-signs"
            outside = {"performer": [{"reference": "Organization/lab"}]} if opt_out and o == 0 else {}
            rows.append(
                {
                    **outside,
                    "resourceType": "Observation",
                    "id": f"o{p}-{o}",
                    "status": "final",
                    "category": [{"coding": [{"code": category}]}],
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                    "subject": {"reference": f"Patient/{pid}"},
                    "encounter": {"reference": f"Encounter/e{p}"},
                }
            )
    store.bulk_write(rows)


def _apps(data_dir: Path, url: str) -> dict[str, tuple[Any, dict[str, str]]]:
    from rhip.api import create_app
    from rhip.config import Settings
    from rhip.security.testing import issue_token
    from rhip.store import Store

    off = create_app(Store(url), Settings(data_dir=data_dir, database_url=url, auth_enabled=False))
    on = create_app(Store(url), Settings(data_dir=data_dir, database_url=url, auth_enabled=True))
    admin = issue_token(on, role="platform_admin", username="bench-admin")
    doc = issue_token(
        on, role="practitioner", username="bench-doc", practitioner_id="d0", organization_id="org0"
    )
    officer = issue_token(on, role="public_health", username="bench-ph", area="110105")
    hub = issue_token(on, role="system", username="bench-hub")
    feed = issue_token(on, role="system", username="bench-feed", organization_id="org0")
    return {
        "off": (off, {}),
        "admin": (on, {"Authorization": f"Bearer {admin}"}),
        "practitioner": (on, {"Authorization": f"Bearer {doc}"}),
        "public_health": (on, {"Authorization": f"Bearer {officer}"}),
        "system": (on, {"Authorization": f"Bearer {hub}"}),
        "system_org0": (on, {"Authorization": f"Bearer {feed}"}),
    }


def main() -> None:
    """Run the benchmark and print the results table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--requests", type=int, default=300, help="requests per configuration")
    parser.add_argument("--writes", action="store_true", help="measure creates and updates instead")
    parser.add_argument(
        "--opt-out", action="store_true", help="every resident opted out; lab results by an outside lab"
    )
    args = parser.parse_args()
    from fastapi.testclient import TestClient

    from rhip.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        url = f"sqlite:///{data_dir / 'rhip.sqlite'}"
        seed = Store(url)
        _seed(seed, args.patients, args.opt_out)
        apps = _apps(data_dir, url)
        wanted = _WRITERS if args.writes else _SEARCHERS
        apps = {name: apps[name] for name in wanted}
        clients = {name: (TestClient(app).__enter__(), headers) for name, (app, headers) in apps.items()}
        rng = random.Random(7)
        # the practitioner's facility (org0) cares for every third resident: query those
        patients = [p for p in range(args.patients) if p % 3 == 0]
        times: dict[tuple[str, str], list[float]] = {}
        for i in range(args.requests + 30):
            p = rng.choice(patients)
            if args.writes:
                kind, method, path, params, body = _write(i, p)
            else:
                (kind, path, params), method, body = _request(i, f"p{p}"), "GET", None
            for name, (client, headers) in clients.items():
                start = time.perf_counter()
                response = client.request(method, path, params=params, headers=headers, json=body)
                elapsed = time.perf_counter() - start
                if response.status_code not in (200, 201) or (
                    not args.writes and not response.json().get("entry")
                ):
                    raise SystemExit(
                        f"{name}: unexpected answer {response.status_code} {response.text[:200]}"
                    )
                if i >= 30:
                    times.setdefault((kind, name), []).append(elapsed * 1000)
        for client, _ in clients.values():
            client.__exit__(None, None, None)
    _report(times, list(apps), ("create", "update") if args.writes else ("narrow", "broad"))


_SEARCHERS = ("off", "admin", "practitioner", "public_health")
_WRITERS = ("off", "admin", "system", "system_org0")


def _write(i: int, p: int) -> tuple[str, str, str, dict[str, str], dict[str, Any]]:
    """The i-th write of the interleaved sequence: a create and an update, both at org0."""
    if i % 2 == 0:
        body: dict[str, Any] = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": f"Patient/p{p}"},
            "encounter": {"reference": f"Encounter/e{p}"},
        }
        return "create", "POST", "/fhir/Observation", {}, body
    body = {
        "resourceType": "Encounter",
        "id": f"e{p}",
        "status": "finished" if i % 4 == 1 else "cancelled",
        "class": {"code": "AMB"},
        "subject": {"reference": f"Patient/p{p}"},
        "serviceProvider": {"reference": "Organization/org0"},
    }
    return "update", "PUT", f"/fhir/Encounter/e{p}", {}, body


def _request(i: int, pid: str) -> tuple[str, str, dict[str, str]]:
    """The i-th request of the interleaved sequence: two narrow searches, then a broad one."""
    if i % 3 == 0:
        return "narrow", "/fhir/Patient", {"_id": pid}
    if i % 3 == 1:
        return "narrow", "/fhir/Observation", {"patient": f"Patient/{pid}"}
    return "broad", "/fhir/Observation", {"code": "http://loinc.org|8867-4", "_count": "20"}


def _report(times: dict[tuple[str, str], list[float]], names: list[str], kinds: tuple[str, ...]) -> None:
    print(f"{'kind':<8}{'config':<15}{'n':>5}{'p50 ms':>9}{'p95 ms':>9}{'p50 vs off':>12}{'p95 vs off':>12}")
    for kind in kinds:
        base = times[(kind, "off")]
        base50, base95 = statistics.median(base), statistics.quantiles(base, n=20)[18]
        for name in names:
            values = times[(kind, name)]
            p50, p95 = statistics.median(values), statistics.quantiles(values, n=20)[18]
            print(
                f"{kind:<8}{name:<15}{len(values):>5}{p50:>9.2f}{p95:>9.2f}"
                f"{p50 / base50:>12.2f}{p95 / base95:>12.2f}"
            )


if __name__ == "__main__":
    main()
