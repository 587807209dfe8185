"""Cost of finishing a key rotation: ``rhip keys reencrypt`` (FHIR bodies, MPI rows) and ``rhip keys status``.

One SQLite store of N different residents (a citizen ID agreeing with birth date and sex, a mobile
phone, names and birth dates spread as in a region; written by ``bulk_write``) is linked once
with ``relink_all``; then each round rotates the SM4 and HMAC keys and times:

* ``fhir``: :func:`rhip.store.reencrypt.reencrypt` rewriting every body;
* ``fhir_noop``: the same call again, with nothing left to do (what a re-run after an
  interruption pays for the part already done);
* ``mpi``: :func:`rhip.mpi.rekey.reencrypt_mpi` re-sealing every MPI row, and ``mpi_noop``;
* ``relink``: ``relink_all`` after another HMAC rotation (the former way to re-seal MPI rows);
* ``status``: :func:`rhip.security.rotation.key_status`.

The MPI and status steps are skipped by code that does not have them, so the same script runs on a
base checkout for A/B runs of the FHIR steps. Prints one JSON line of median seconds.

    .venv/bin/python benchmarks/keys_reencrypt.py --n 3000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from rhip.fhir.identifiers import make_citizen_id
from rhip.fhir.systems import CITIZEN_ID
from rhip.security.crypto import FieldCipher
from rhip.security.keys import KeyRing
from rhip.store import Store
from rhip.store.fieldcrypt import FieldCrypt
from rhip.store.reencrypt import reencrypt

_FAMILY = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗"
_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超"


def residents(n: int) -> list[dict[str, Any]]:
    """N Patients of N different people, each with a trusted citizen ID and a mobile phone."""
    out = []
    for i in range(n):
        born = date(1940, 1, 1) + timedelta(days=(i * 7919) % 25000)
        sex = "female" if i % 2 else "male"
        cid = make_citizen_id("330106", born, i % 997, sex)
        out.append(
            {
                "resourceType": "Patient",
                "id": f"pat-{i}",
                "identifier": [{"system": CITIZEN_ID, "value": cid}],
                "name": [{"family": _FAMILY[i % len(_FAMILY)], "given": [_GIVEN[(i // 7) % len(_GIVEN)]]}],
                "telecom": [{"system": "phone", "value": f"138{i:08d}", "use": "mobile"}],
                "gender": sex,
                "birthDate": born.isoformat(),
                "address": [{"text": f"西湖区文三路{i % 400}号", "district": "西湖区"}],
            }
        )
    return out


def _seconds(step: Callable[[], Any]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def _mpi_steps(store: Store, ring: KeyRing) -> dict[str, float]:
    """The MPI and status steps of one round (empty on code without ``rhip.mpi.rekey``)."""
    try:
        from rhip.mpi.rekey import reencrypt_mpi
        from rhip.security.rotation import key_status
    except ImportError:
        return {}
    from rhip.mpi.relink import relink_all

    times = {
        "mpi": _seconds(lambda: reencrypt_mpi(store)),
        "mpi_noop": _seconds(lambda: reencrypt_mpi(store)),
    }
    times["status"] = _seconds(lambda: key_status(store))
    ring.rotate("hmac")
    times["relink"] = _seconds(lambda: relink_all(store))
    reencrypt_mpi(store)
    reencrypt(store)  # bodies back under the newest keys before the next round
    return times


def main() -> None:
    """Build the store, run the rounds, print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3000, help="Patients in the store.")
    parser.add_argument("--rounds", type=int, default=3, help="Rotations timed.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rhip-keys-bench-") as tmp:
        ring = KeyRing(Path(tmp))
        store = Store(f"sqlite:///{tmp}/rhip.sqlite", fields=FieldCrypt(FieldCipher(ring)))
        store.bulk_write(residents(args.n))
        try:
            from rhip.mpi.relink import relink_all

            relink_all(store)
        except ImportError:
            pass
        rounds: list[dict[str, float]] = []
        for _ in range(args.rounds):
            ring.rotate("sm4")
            ring.rotate("hmac")
            times = {
                "fhir": _seconds(lambda: reencrypt(store)),
                "fhir_noop": _seconds(lambda: reencrypt(store)),
            }
            times.update(_mpi_steps(store, ring))
            rounds.append(times)
        store.close()
    medians = {step: round(statistics.median(r[step] for r in rounds), 3) for step in rounds[0]}
    print(json.dumps({"n": args.n, "rounds": args.rounds, **medians}))


if __name__ == "__main__":
    main()
