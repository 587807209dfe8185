"""SQL statements (and latency) per write of a facility's feed, by kind of record written.

Seeds a SQLite store with facilities orgA and orgB, one resident of orgA and, per index, an
Encounter at orgA, an Observation naming orgA as performer and that Encounter, an Observation
naming the Encounter only, and a referral from orgB to orgA. Then a ``system`` account bound to
orgA writes over the FHIR API (authentication on): creates, updates, a referral's status patched by
the facility it is addressed to, deletes. An SQLAlchemy listener counts the statements of each
request (audit statements excluded); the table gives the most common count and the p50 latency.
Run: ``.venv/bin/python benchmarks/facility_write_statements.py [--writes 48]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson


def _ref(text: str) -> dict[str, str]:
    return {"reference": text}


def _observation(i: int, performer: bool, status: str = "final") -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"{'o' if performer else 'n'}{i}",
        "status": status,
        "code": {"text": "heart rate"},
        "subject": _ref("Patient/pA"),
        "encounter": _ref(f"Encounter/e{i}"),
    }
    if performer:
        body["performer"] = [_ref("Organization/orgA")]
    return body


def _encounter(i: int, status: str = "finished") -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": f"e{i}",
        "status": status,
        "class": {"code": "AMB"},
        "subject": _ref("Patient/pA"),
        "serviceProvider": _ref("Organization/orgA"),
    }


def _seed(store: Any, n: int) -> None:
    rows: list[dict[str, Any]] = [{"resourceType": "Organization", "id": o} for o in ("orgA", "orgB")]
    rows.append({"resourceType": "Patient", "id": "pA", "managingOrganization": _ref("Organization/orgA")})
    for i in range(n):
        rows += [_encounter(i), _observation(i, True), _observation(i, False)]
        rows.append(
            {
                "resourceType": "ServiceRequest",
                "id": f"s{i}",
                "status": "active",
                "intent": "order",
                "code": {"text": "referral"},
                "subject": _ref("Patient/pA"),
                "requester": _ref("Organization/orgB"),
                "performer": [_ref("Organization/orgA")],
            }
        )
    for body in rows:
        store.update(body["resourceType"], body["id"], body)


Write = tuple[str, str, Any]
CASES: dict[str, Callable[[int], Write]] = {
    "create Observation (Encounter only)": lambda i: (
        "POST",
        "Observation",
        {k: v for k, v in _observation(i, False).items() if k != "id"},
    ),
    "update Encounter": lambda i: ("PUT", f"Encounter/e{i}", _encounter(i, "cancelled")),
    "update Observation (performer + Encounter)": lambda i: (
        "PUT",
        f"Observation/o{i}",
        _observation(i, True, "amended"),
    ),
    "update Observation (Encounter only)": lambda i: (
        "PUT",
        f"Observation/n{i}",
        _observation(i, False, "amended"),
    ),
    "patch referral status (addressed to orgA)": lambda i: (
        "PATCH",
        f"ServiceRequest/s{i}",
        [{"op": "replace", "path": "/status", "value": "completed"}],
    ),
    "delete Observation (performer + Encounter)": lambda i: ("DELETE", f"Observation/o{i}", None),
}


def main() -> None:
    """Run every case and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=48, help="writes per case (after 2 warm-up writes)")
    args = parser.parse_args()
    from fastapi.testclient import TestClient
    from sqlalchemy import event

    from rhip.api import create_app
    from rhip.config import Settings
    from rhip.security.testing import issue_token
    from rhip.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'rhip.sqlite'}"
        store = Store(url)
        _seed(store, args.writes + 2)
        app = create_app(store, Settings(data_dir=Path(tmp), database_url=url, auth_enabled=True))
        count = [0]

        def counted(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
            if "audit" not in statement.lower():
                count[0] += 1

        event.listen(store.engine, "before_cursor_execute", counted)
        with TestClient(app) as client:
            token = issue_token(app, username="his-a", role="system", organization_id="orgA")
            print(f"{'write':<46}{'statements':>11}{'p50 ms':>9}")
            for name, make in CASES.items():
                counts, times = [], []
                for i in range(args.writes + 2):
                    method, path, body = make(i)
                    kind = "application/json-patch+json" if method == "PATCH" else "application/fhir+json"
                    headers = {"Authorization": f"Bearer {token}", "content-type": kind}
                    content = None if body is None else orjson.dumps(body)
                    count[0] = 0
                    start = time.perf_counter()
                    answer = client.request(method, f"/fhir/{path}", content=content, headers=headers)
                    elapsed = time.perf_counter() - start
                    if answer.status_code not in (200, 201, 204):
                        raise SystemExit(f"{name}: answered {answer.status_code} {answer.text[:200]}")
                    if i >= 2:
                        counts.append(count[0])
                        times.append(elapsed * 1000)
                print(f"{name:<46}{statistics.mode(counts):>11}{statistics.median(times):>9.2f}")
        store.close()


if __name__ == "__main__":
    main()
