"""Cost of authentication, authorisation and auditing on FHIR searches, measured in one run.

Seeds a SQLite store (residents, each with an Encounter at one of a few facilities and several
Observations), then serves it through three apps built by ``create_app`` over the same store:

* ``off``: ``auth_enabled=False`` (no token, no policy, no audit): the spine alone;
* ``admin``: token + policy + SM3-chained audit for a platform admin (full access, no filtering);
* ``practitioner``: token + policy for a practitioner whose facility cares for every resident, so
  each search is filtered by care relationship and consent, totals recounted, and audited.

Requests are interleaved (off, admin, practitioner, off, ...) so load drift on a shared machine
hits all three alike; the table gives p50/p95 latency and the p95 ratio to ``off``.
Run: ``.venv/bin/python benchmarks/security_overhead.py [--patients 300] [--requests 300]``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def _seed(store: Any, patients: int) -> None:
    rows: list[dict[str, Any]] = [{"resourceType": "Organization", "id": f"org{i}"} for i in range(3)]
    for p in range(patients):
        pid = f"p{p}"
        rows.append(
            {"resourceType": "Patient", "id": pid, "gender": "female", "address": [{"district": "110105"}]}
        )
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
            rows.append(
                {
                    "resourceType": "Observation",
                    "id": f"o{p}-{o}",
                    "status": "final",
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
    return {
        "off": (off, {}),
        "admin": (on, {"Authorization": f"Bearer {admin}"}),
        "practitioner": (on, {"Authorization": f"Bearer {doc}"}),
    }


def main() -> None:
    """Run the benchmark and print the results table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--requests", type=int, default=300, help="requests per configuration")
    args = parser.parse_args()
    from fastapi.testclient import TestClient

    from rhip.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        url = f"sqlite:///{data_dir / 'rhip.sqlite'}"
        seed = Store(url)
        _seed(seed, args.patients)
        apps = _apps(data_dir, url)
        clients = {name: (TestClient(app).__enter__(), headers) for name, (app, headers) in apps.items()}
        rng = random.Random(7)
        # the practitioner's facility (org0) cares for every third resident: query those
        patients = [p for p in range(args.patients) if p % 3 == 0]
        times: dict[str, list[float]] = {name: [] for name in clients}
        for i in range(args.requests + 20):
            pid = f"p{rng.choice(patients)}"
            path = (
                ("/fhir/Observation", {"patient": f"Patient/{pid}"})
                if i % 2
                else ("/fhir/Patient", {"_id": pid})
            )
            for name, (client, headers) in clients.items():
                start = time.perf_counter()
                response = client.get(path[0], params=path[1], headers=headers)
                elapsed = time.perf_counter() - start
                if response.status_code != 200 or not response.json().get("entry"):
                    raise SystemExit(f"{name}: unexpected answer {response.status_code}")
                if i >= 20:
                    times[name].append(elapsed * 1000)
        for client, _ in clients.values():
            client.__exit__(None, None, None)
    base95 = statistics.quantiles(times["off"], n=20)[18]
    base50 = statistics.median(times["off"])
    print(f"{'config':<14}{'p50 ms':>9}{'p95 ms':>9}{'p50 vs off':>12}{'p95 vs off':>12}")
    for name, values in times.items():
        p50, p95 = statistics.median(values), statistics.quantiles(values, n=20)[18]
        print(f"{name:<14}{p50:>9.2f}{p95:>9.2f}{p50 / base50:>12.2f}{p95 / base95:>12.2f}")


if __name__ == "__main__":
    main()
