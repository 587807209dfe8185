"""Speed of the MPI re-seal (``rhip keys reencrypt`` → :func:`rhip.mpi.rekey.reencrypt_mpi`), A/B.

One store of N different residents (citizen ID, mobile phone; the Patients of
``keys_reencrypt.residents``) is written and linked by ``relink_all`` once. Each trial then runs in
a fresh subprocess whose ``PYTHONPATH`` is the source tree under test (``--base`` for the code
before a change, this checkout's ``src`` for the changed one): it rotates the SM4 and HMAC keys,
so every row is stale again, times ``reencrypt_mpi`` at that tree's default page size, and times
a second pass with nothing left to do. Trials alternate base and changed (ABBA...), so the noisy,
shared machine weighs on both alike. Prints one JSON line per trial, then a summary: median
rows/s per side, their ratio and the projected minutes per million rows; ``page_max_s`` is the
longest page (reading, sealing and writing it) and ``write_max_s`` its longest write transaction:
how long a real-time link may wait for the write lock.

    git archive <base> src | tar -x -C /tmp/rekey-base
    .venv/bin/python benchmarks/mpi_rekey.py --n 20000 --pairs 2 --base /tmp/rekey-base/src
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from keys_reencrypt import residents
from store_bulk import database

_HERE = Path(__file__).resolve()
_CHANGED_SRC = _HERE.parent.parent / "src"


def _open(url: str, keys: Path) -> Any:
    from rhip.security.crypto import FieldCipher
    from rhip.security.keys import KeyRing
    from rhip.store import Store
    from rhip.store.fieldcrypt import FieldCrypt

    return Store(url, fields=FieldCrypt(FieldCipher(KeyRing(keys))))


def build(url: str, keys: Path, n: int) -> None:
    """Write and link N residents (done once, with the changed tree)."""
    from rhip.mpi.relink import relink_all

    store = _open(url, keys)
    try:
        store.bulk_write(residents(n))
        relink_all(store)
    finally:
        store.close()


def child(url: str, keys: Path) -> dict[str, Any]:
    """One trial in this process's tree: rotate, re-seal every row, re-seal again (nothing to do)."""
    from rhip.mpi import rekey
    from rhip.security.keys import KeyRing

    held = _time_write_transactions(rekey)
    KeyRing(keys).rotate("sm4")
    KeyRing(keys).rotate("hmac")
    store = _open(url, keys)
    pages: list[float] = []
    last = time.perf_counter()

    def page_done(_rows: int) -> None:
        nonlocal last
        now = time.perf_counter()
        pages.append(now - last)
        last = now

    try:
        start = last = time.perf_counter()
        done = rekey.reencrypt_mpi(store, on_rows=page_done)
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        again = rekey.reencrypt_mpi(store)
        noop = time.perf_counter() - start
    finally:
        store.close()
    if again.resealed or again.reencrypted or done.resealed != done.total:
        raise SystemExit(f"unexpected counts: {done} then {again}")
    return {"rows": done.resealed, "seconds": round(seconds, 2), "noop_s": round(noop, 2),
            "pages": len(pages), "page_max_s": round(max(pages, default=0.0), 3),
            "write_max_s": round(max(held, default=0.0), 3)}  # fmt: skip


def _time_write_transactions(module: Any) -> list[float]:
    """Wrap ``module.write_transaction`` so that each transaction's duration (write lock held) is kept."""
    opened = module.write_transaction
    held: list[float] = []

    @contextmanager
    def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
        start = time.perf_counter()
        try:
            with opened(*args, **kwargs) as conn:
                yield conn
        finally:
            held.append(time.perf_counter() - start)

    module.write_transaction = timed
    return held


def _trial(side: str, src: Path, url: str, keys: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run(
        [sys.executable, str(_HERE), "--child", url, str(keys)], env=env, check=True, capture_output=True
    )
    result = {"side": side, **json.loads(out.stdout.decode().strip().splitlines()[-1])}
    result["rows_per_s"] = round(result["rows"] / result["seconds"], 1)
    result["utc"] = time.strftime("%H:%M:%S", time.gmtime())
    result["load1"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    """Build the store, alternate the trials, print the summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="Residents in the MPI.")
    parser.add_argument("--pairs", type=int, default=2, help="Base/changed pairs (alternating order).")
    parser.add_argument("--base", type=Path, required=False, help="src folder of the base tree.")
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--child", nargs=2, metavar=("URL", "KEYS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]))))
        return
    sides = [("changed", _CHANGED_SRC)] + ([("base", args.base)] if args.base else [])
    with database(args.backend) as url, tempfile.TemporaryDirectory(prefix="rhip-rekey-") as tmp:
        started = time.perf_counter()
        build(url, Path(tmp), args.n)
        print(
            json.dumps(
                {"n": args.n, "backend": args.backend, "build_s": round(time.perf_counter() - started, 1)}
            )
        )
        runs = [
            _trial(name, src, url, Path(tmp))
            for pair in range(args.pairs)
            for name, src in (reversed(sides) if pair % 2 == 0 else sides)
        ]
    rates = {
        name: round(statistics.median(r["rows_per_s"] for r in runs if r["side"] == name), 1)
        for name, _ in sides
    }
    summary: dict[str, Any] = {f"{name}_rows_per_s": rate for name, rate in rates.items()} | {
        f"{name}_min_per_million": round(1e6 / rate / 60, 1) for name, rate in rates.items()
    }
    if "base" in rates:
        summary["changed_over_base"] = round(rates["changed"] / rates["base"], 2)
    print(json.dumps({"summary": summary}))


if __name__ == "__main__":
    main()
