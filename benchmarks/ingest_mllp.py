"""HL7 v2 over MLLP: messages acknowledged per second end to end (socket -> parse -> store -> ACK).

Starts a real MLLP listener on a free port (SQLite store in a temp dir, or --database-url), then
N concurrent sender connections each send their messages one at a time and wait for every ACK.
Also reports the raw limits measured in the same run: python-hl7 parse rate, RHIP's parse rate
(python-hl7 plus the header and delimiter checks), and the TCP round trip of an echo server doing
no work (the ceiling for one waiting sender); and the end-to-end rate per CPU-second of the
process (senders included), which is the figure to compare on a shared machine, with the mean
batch size (messages per store transaction).

Usage: .venv/bin/python benchmarks/ingest_mllp.py [--messages 5000] [--connections 8]
       [--batch-wait-ms 2] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
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
        while data := await reader.readuntil(b"\x1c\r"):
            writer.write(b"\x0bMSH|ACK\x1c\r")
            await writer.drain()
            if not data:
                break

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
    server.close()
    return rate


async def _run(url: str, n: int, connections: int, wait_ms: float | None) -> dict[str, Any]:
    from rhip.ingest import hl7v2_map  # noqa: F401
    from rhip.ingest.mllp import MLLPListener, ack_of, send_messages
    from rhip.ingest.pipeline import Pipeline
    from rhip.quality.collector import QualityCollector
    from rhip.store import Store

    store = Store(url)
    wait = None if wait_ms is None else wait_ms / 1000
    pipeline = Pipeline(store, observers=[QualityCollector(store.engine)])
    listener = MLLPListener(pipeline, "127.0.0.1", 0, batch_wait=wait)
    await listener.start()
    msgs = [message(i) for i in range(n)]
    t = time.perf_counter()
    cpu = time.process_time()
    results = await asyncio.gather(
        *[
            send_messages("127.0.0.1", listener.port, msgs[c::connections], timeout=300)
            for c in range(connections)
        ]
    )
    rate = n / (time.perf_counter() - t)
    cpu_rate = n / (time.process_time() - cpu)
    batches = listener.stats.batches
    await listener.stop()
    codes: dict[str, int] = {}
    for ack in (a for r in results for a in r):
        code = ack_of(ack)["code"]
        codes[code] = codes.get(code, 0) + 1
    store.close()
    return {"rate": rate, "cpu_rate": cpu_rate, "codes": codes, "batch": n / max(batches, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--batch-wait-ms", type=float, default=None, help="default: the setting")
    args = ap.parse_args()
    import hl7

    from rhip.ingest import hl7v2

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
    with tempfile.TemporaryDirectory() as d:
        url = args.database_url or f"sqlite:///{Path(d) / 'mllp.sqlite'}"
        run = asyncio.run(_run(url, args.messages, args.connections, args.batch_wait_ms))
    print(f"\n{args.messages:,} ADT^A04 messages over {args.connections} MLLP connections\n")
    print(f"{'measure':<48}{'messages/s':>12}")
    print(f"{'raw python-hl7 parse':<48}{parse_rate:>12,.0f}")
    print(f"{'RHIP parse with checks (hl7v2.parse)':<48}{checked_rate:>12,.0f}")
    print(f"{'raw TCP echo round trip (1 connection)':<48}{echo:>12,.0f}")
    print(f"{'acknowledged end to end (stored + ACK)':<48}{run['rate']:>12,.0f}")
    print(f"{'  per CPU-second of the process':<48}{run['cpu_rate']:>12,.0f}")
    print(f"\nmean batch: {run['batch']:.1f} messages; ACK codes: {run['codes']}")


if __name__ == "__main__":
    main()
