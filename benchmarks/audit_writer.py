"""CPU of the audit writer thread per event, with a busy "event loop" submitting at a steady rate.

Mimics the API under load: the main thread does a fixed amount of Python work per "request" (a
counted loop, not a wall-clock spin) and submits one audit record, at ``--rate`` events/s; the
``AuditWriter`` thread chains them into a fresh SQLite file (WAL), as ``rhip serve`` does. Reports
the writer thread's CPU per event (``/proc/self/task/<tid>/schedstat``, Linux) and the main
thread's CPU per event (its fixed work included, so only differences between runs mean anything),
then checks that the chain verifies with every event on it.

``--base-src DIR`` alternates runs of another checkout's code (``DIR`` = its ``src``) with this
one's, round after round, and prints the ratio base / this per round (the machine is shared).
Run: ``.venv/bin/python benchmarks/audit_writer.py [--events 3000] [--rate 700] [--rounds 3]
[--base-src ../other/src]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _thread_cpu(native_id: int) -> float:
    """CPU seconds of one thread of this process."""
    with open(f"/proc/self/task/{native_id}/schedstat", encoding="ascii") as f:
        return int(f.read().split()[0]) / 1e9


def _work(iterations: int) -> int:
    """A fixed amount of Python work standing for one request on the event loop."""
    x = 0
    for i in range(iterations):
        x += i
    return x


def measure(events: int, rate: float, work: int) -> dict[str, float]:
    """One run in this process: writer and main-thread CPU per event, in microseconds."""
    from rhip.security.audit import AuditRecord, AuditWriter, verify_chain
    from rhip.store.engine import make_engine

    engine = make_engine(f"sqlite:///{tempfile.mkdtemp()}/audit.sqlite")
    writer = AuditWriter(engine)
    writer.submit(AuditRecord(actor="warm-up", role="system", action="read", outcome="0"))
    writer.flush()
    tid = writer._thread.native_id or 0
    writer_before, main_before, due = _thread_cpu(tid), time.thread_time(), time.perf_counter()
    for i in range(events):
        _work(work)
        pid = f"p{i % 500:05d}"
        writer.submit(
            AuditRecord(actor="bench-connector", role="system", action="read", outcome="0",
                        entities=[f"Patient/{pid}"], patients=[pid], source="127.0.0.1",
                        request_id=f"{i:032x}", path=f"/fhir/Patient/{pid}")
        )  # fmt: skip
        due += 1.0 / rate
        time.sleep(max(0.0, due - time.perf_counter()))
    main_cpu = time.thread_time() - main_before
    writer.flush()
    writer_cpu = _thread_cpu(tid) - writer_before
    writer.close()
    report = verify_chain(engine)
    if not report.ok or report.checked != events + 1:
        raise SystemExit(f"chain broken or short: {report}")
    return {"writer_us": 1e6 * writer_cpu / events, "main_us": 1e6 * main_cpu / events}


def _run_child(src: str | None, args: argparse.Namespace) -> dict[str, float]:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
    cmd = [sys.executable, __file__, "--child", "--events", str(args.events), "--rate", str(args.rate)]
    out = subprocess.run(
        [*cmd, "--work", str(args.work)], env=env, check=True, capture_output=True, text=True
    )
    return dict(json.loads(out.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000, help="events per run")
    parser.add_argument("--rate", type=float, default=700.0, help="events submitted per second")
    parser.add_argument(
        "--work", type=int, default=20_000, help="loop iterations of main-thread work per event"
    )
    parser.add_argument("--rounds", type=int, default=3, help="runs per code base, alternated")
    parser.add_argument("--base-src", help="src directory of another checkout to alternate with")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.events, args.rate, args.work)))
        return
    sides = [("this", None)] + ([("base", str(Path(args.base_src).resolve()))] if args.base_src else [])
    print(f"{args.events} events at {args.rate:.0f}/s per run; load average {os.getloadavg()[0]:.1f}")
    print(f"{'code':<6}{'writer us/event':>17}{'main us/event':>15}{'load':>6}")
    for _ in range(args.rounds):
        row = {}
        for name, src in sides:
            row[name] = _run_child(src, args)
            print(
                f"{name:<6}{row[name]['writer_us']:>17.1f}{row[name]['main_us']:>15.1f}{os.getloadavg()[0]:>6.1f}"
            )
        if "base" in row:
            ratio = row["base"]["writer_us"] / row["this"]["writer_us"]
            print(f"writer CPU per event base / this: {ratio:.2f}")


if __name__ == "__main__":
    main()
