"""HL7 v2 over MLLP: messages acknowledged per second end to end (socket -> parse -> store -> ACK).

Starts a real MLLP listener on a free port (SQLite store in a temp dir, or --database-url), then a
sender process opens N concurrent connections, each sending its messages one at a time and waiting
for every ACK. Each mode runs with its own listener: ``thread`` maps messages in the listener's
process, ``process`` in its prepare process (setting ``mllp_prepare_process``); with --rounds the
modes alternate. The listener runs on the event loop of setting ``mllp_uvloop`` (uvloop unless
``RHIP_MLLP_UVLOOP=false``), the senders on asyncio's own loop whatever the setting. Also reports
the raw limits measured in the same run: python-hl7 parse rate, RHIP's parse rate (python-hl7 plus
the header and delimiter checks), and the TCP round trip of an echo server doing no work (the
ceiling for one waiting sender).

Per run: acknowledged messages per second (wall), per CPU-second of the server (listener process
plus prepare process: the figure to compare on a shared machine), the CPU milliseconds per message
of the listener, the prepare process and the senders, and the mean batch (messages per store
transaction); then the listener's CPU per message by thread: its event loop (sockets, framing,
ACKs), the write worker threads (parse, map, store write, commit) and the WAL checkpoint thread
(Linux only). Prints the load average at the end.

Usage: .venv/bin/python benchmarks/ingest_mllp.py [--messages 5000] [--connections 8]
       [--batch-wait-ms 2] [--database-url URL] [--modes thread,process] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def message(i: int) -> str:
    return (
        f"MSH|^~\\&|HIS|B{i % 4}|RHIP|R|20261101083000||ADT^A04^ADT_A01|BM{i}|P|2.5"
        "|||AL|NE|CHN|UNICODE UTF-8\r"
        f"EVN|A04|20261101083000\r"
        f"PID|1||MRN{i}^^^B{i % 4}^MR~330402198005061238^^^NNCHN^NNCHN"
        "||王^芳||19800506|F|||嘉兴市南湖区^^^^^CHN\r"
        f"PV1|1|O|内科^^^B{i % 4}||||D01^李医生|||||||||||V{i}|||||||||||||||||||||||||20261101083000\r"
    )


async def _echo_limit(n: int) -> float:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while await reader.readuntil(b"\x1c\r"):
                writer.write(b"\x0bMSH|ACK\x1c\r")
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    t = time.perf_counter()
    for i in range(n):
        writer.write(b"\x0b" + message(i).encode() + b"\x1c\r")
        await writer.drain()
        await reader.readuntil(b"\x1c\r")
    rate = n / (time.perf_counter() - t)
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    return rate


def _send(port: int, first: int, n: int, connections: int, out: Any) -> None:
    """Sender process body: ``connections`` waiting senders; reports (seconds, CPU seconds, ACKs)."""
    from rhip.ingest.mllp import send_messages

    async def main() -> list[list[str]]:
        msgs = [message(i) for i in range(first, first + n)]
        return await asyncio.gather(
            *[send_messages("127.0.0.1", port, msgs[c::connections], timeout=600) for c in range(connections)]
        )

    t, cpu = time.perf_counter(), time.process_time()
    results = asyncio.run(main())
    out.send((time.perf_counter() - t, time.process_time() - cpu, [a for r in results for a in r]))


def _cpu_of(pid: int | None) -> float:
    """CPU seconds used so far by another process (Linux /proc; 0 when unknown)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _thread_cpu() -> dict[int, float]:
    """CPU seconds used so far by each thread of this process, by native id (Linux /proc; empty
    when unknown)."""
    found: dict[int, float] = {}
    try:
        tasks = list(Path("/proc/self/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[int(task.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return found


async def _run(
    url: str, n: int, connections: int, wait_ms: float | None, process: bool, first: int
) -> dict[str, Any]:
    """One end-to-end run; the senders are a separate process, so the listener's CPU is its own."""
    from rhip.ingest import hl7v2_map  # noqa: F401
    from rhip.ingest.mllp import MLLPListener, ack_of
    from rhip.ingest.pipeline import Pipeline
    from rhip.quality.collector import QualityCollector
    from rhip.store import Store

    store = Store(url)
    wait = None if wait_ms is None else wait_ms / 1000
    pipeline = Pipeline(store, observers=[QualityCollector(store.engine)])
    listener = MLLPListener(pipeline, "127.0.0.1", 0, batch_wait=wait, prepare_process=process)
    await listener.start()
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    sender = ctx.Process(target=_send, args=(listener.port, first, n, connections, send))
    cpu, child_cpu = time.process_time(), _cpu_of(listener.prepare_pid)
    threads = _thread_cpu()
    sender.start()
    send.close()  # the sender's end lives in the sender only: its exit ends the wait
    seconds, sender_cpu, acks = await asyncio.to_thread(receive.recv)
    listener_cpu = time.process_time() - cpu
    child_cpu = _cpu_of(listener.prepare_pid) - child_cpu
    used = {tid: t - threads.get(tid, 0.0) for tid, t in _thread_cpu().items()}
    checkpointer = listener._checkpoints._thread  # None on stores without a log to checkpoint
    loop_cpu = used.pop(threading.get_native_id(), 0.0)
    checkpoint_cpu = used.pop(checkpointer.native_id, 0.0) if checkpointer and checkpointer.native_id else 0.0
    await asyncio.to_thread(sender.join)
    batches = listener.stats.batches
    await listener.stop()
    codes: dict[str, int] = {}
    for ack in acks:
        code = ack_of(ack)["code"]
        codes[code] = codes.get(code, 0) + 1
    store.close()
    return {
        "rate": n / seconds,
        "server_cpu_rate": n / (listener_cpu + child_cpu),
        "listener_ms": listener_cpu / n * 1000,
        "child_ms": child_cpu / n * 1000,
        "sender_ms": sender_cpu / n * 1000,
        "loop_ms": loop_cpu / n * 1000,
        "worker_ms": sum(used.values()) / n * 1000,
        "checkpoint_ms": checkpoint_cpu / n * 1000,
        "codes": codes,
        "batch": n / max(batches, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--batch-wait-ms", type=float, default=None, help="default: the setting")
    ap.add_argument(
        "--modes", default="thread,process", help="comma-separated: thread (map in the listener), process"
    )
    ap.add_argument("--rounds", type=int, default=1, help="runs of each mode, alternating")
    args = ap.parse_args()
    import hl7

    from rhip.ingest import hl7v2
    from rhip.ingest.mllp import loop_factory
    from rhip.ingest.mllp import run as run_listener

    texts = [message(i) for i in range(2000)]
    t = time.perf_counter()
    for text in texts:
        hl7.parse(text)
    parse_rate = len(texts) / (time.perf_counter() - t)
    t = time.perf_counter()
    for text in texts:
        hl7v2.parse(hl7v2.normalise(text))
    checked_rate = len(texts) / (time.perf_counter() - t)
    echo = asyncio.run(_echo_limit(2000))
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    runs: list[tuple[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as d:
        for _round in range(args.rounds):
            for mode in modes:
                url = args.database_url or f"sqlite:///{Path(d) / f'mllp-{mode}.sqlite'}"
                first = len(runs) * args.messages  # every run sends new control ids
                run = _run(url, args.messages, args.connections, args.batch_wait_ms, mode == "process", first)
                runs.append((mode, run_listener(run)))
    load = os.getloadavg()
    print(f"\n{args.messages:,} ADT^A04 messages over {args.connections} MLLP connections per run")
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"listener event loop: {'asyncio' if loop_factory() is None else 'uvloop'}\n")
    print(f"{'measure':<48}{'messages/s':>12}")
    print(f"{'raw python-hl7 parse':<48}{parse_rate:>12,.0f}")
    print(f"{'RHIP parse with checks (hl7v2.parse)':<48}{checked_rate:>12,.0f}")
    print(f"{'raw TCP echo round trip (1 connection)':<48}{echo:>12,.0f}")
    print(
        f"\n{'mode':<9}{'acked/s':>9}{'per server CPU-s':>18}{'listener ms':>13}{'child ms':>10}"
        f"{'sender ms':>11}{'batch':>7}  ACK codes"
    )
    for mode, run in runs:
        print(
            f"{mode:<9}{run['rate']:>9,.0f}{run['server_cpu_rate']:>18,.0f}{run['listener_ms']:>13.3f}"
            f"{run['child_ms']:>10.3f}{run['sender_ms']:>11.3f}{run['batch']:>7.1f}  {run['codes']}"
        )
    print("\n(ms: CPU per message; server = listener + prepare process; senders run in their own process)")
    print(f"\n{'mode':<9}{'listener ms by thread: event loop':>34}{'write workers':>15}{'checkpoints':>13}")
    for mode, run in runs:
        print(f"{mode:<9}{run['loop_ms']:>34.3f}{run['worker_ms']:>15.3f}{run['checkpoint_ms']:>13.3f}")


if __name__ == "__main__":
    main()
