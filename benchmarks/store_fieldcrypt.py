"""Cost of SM4 field encryption at rest: bulk writes and reads of Patients with and without it.

For each round, two fresh SQLite stores (one without field encryption, one with it) receive the
same N Patients (citizen ID + mobile phone each) through ``bulk_write``, then the same Patients
again (the unchanged re-delivery path), then are read back with ``iter_current``; a mixed load
(1 Patient : 4 Observations) measures what the other types pay. Rounds alternate the order of
the two configurations so load drift hits both alike; the ratios are medians over the rounds.

    .venv/bin/python benchmarks/store_fieldcrypt.py --n 5000 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from rhip.fhir.identifiers import make_citizen_id
from rhip.fhir.systems import CITIZEN_ID
from rhip.security.crypto import FieldCipher
from rhip.security.keys import KeyRing
from rhip.store import Store
from rhip.store.fieldcrypt import PLAIN, FieldCrypt


def patients(n: int) -> list[dict[str, Any]]:
    """N Patients, each with a valid citizen ID and a mobile number."""
    return [
        {
            "resourceType": "Patient",
            "id": f"pat-{i}",
            "identifier": [
                {
                    "system": CITIZEN_ID,
                    "value": make_citizen_id(
                        "330106",
                        date(1950 + i % 60, 1 + i % 12, 1 + i % 28),
                        i % 999,
                        "female" if i % 2 else "male",
                    ),
                },
                {"system": "urn:oid:2.16.156.10011.1.19", "value": f"H{i:09d}"},
            ],
            "name": [{"family": "王", "given": ["小明"]}],
            "telecom": [{"system": "phone", "value": f"138{i:08d}", "use": "mobile"}],
            "gender": "male",
            "birthDate": "1980-05-17",
        }
        for i in range(n)
    ]


def observations(n: int) -> list[dict[str, Any]]:
    """N Observations of the Patients above (they are not encrypted)."""
    return [
        {
            "resourceType": "Observation",
            "id": f"obs-{i}",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
            "subject": {"reference": f"Patient/pat-{i // 4}"},
            "valueQuantity": {"value": 120 + i % 40, "unit": "mm[Hg]"},
        }
        for i in range(n)
    ]


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def one_round(n: int, encrypted: bool, folder: Path) -> dict[str, float]:
    """Seconds of each step on a fresh store."""
    crypt = FieldCrypt(FieldCipher(KeyRing(folder))) if encrypted else PLAIN
    records = patients(n)
    mixed = [*patients(n // 5), *observations(4 * (n // 5))]
    out: dict[str, float] = {}
    with Store(f"sqlite:///{folder / 'p.sqlite'}", fields=crypt) as store:
        out["write"] = timed(lambda: store.bulk_write(records))
        out["redeliver"] = timed(lambda: store.bulk_write(patients(n)))
        out["read"] = timed(lambda: sum(1 for _ in store.iter_current("Patient")))
    with Store(f"sqlite:///{folder / 'm.sqlite'}", fields=crypt) as store:
        out["mixed"] = timed(lambda: store.bulk_write(mixed))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="Patients per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    for encrypted in (False, True):  # warm-up (imports, compiled statements), not counted
        with tempfile.TemporaryDirectory(prefix="rhip-fc-") as tmp:
            one_round(200, encrypted, Path(tmp))
    results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for r in range(args.rounds):
        for encrypted in (False, True) if r % 2 == 0 else (True, False):
            with tempfile.TemporaryDirectory(prefix="rhip-fc-") as tmp:
                results[encrypted].append(one_round(args.n, encrypted, Path(tmp)))
    print(f"{args.n} Patients per round, {args.rounds} rounds, SQLite; medians")
    print(f"{'step':<10} {'plain/s':>10} {'sm4/s':>10} {'sm4 vs plain (time)':>20}")
    for step in ("write", "redeliver", "read", "mixed"):
        plain = statistics.median(r[step] for r in results[False])
        sm4 = statistics.median(r[step] for r in results[True])
        count = args.n if step != "mixed" else 5 * (args.n // 5)
        ratios = [e[step] / p[step] for p, e in zip(results[False], results[True], strict=True)]
        print(f"{step:<10} {count / plain:>10,.0f} {count / sm4:>10,.0f} {statistics.median(ratios):>20.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
