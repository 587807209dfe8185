"""HL7 v2 over MLLP: messages acknowledged per second end to end (socket -> parse -> store -> ACK).

Starts a real MLLP listener on a free port (SQLite store in a temp dir, or --database-url), then
N concurrent sender connections each send their messages one at a time and wait for every ACK.
Also reports the raw limits measured in the same run: python-hl7 parse rate, and the TCP round
trip of an echo server doing no work (the ceiling for one waiting sender).

Usage: .venv/bin/python benchmarks/ingest_mllp.py [--messages 5000] [--connections 8]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path


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


async def _run(url: str, n: int, connections: int) -> tuple[float, dict[str, int]]:
    from rhip.ingest import hl7v2_map  # noqa: F401
    from rhip.ingest.mllp import MLLPListener, ack_of, send_messages
    from rhip.ingest.pipeline import Pipeline
    from rhip.quality.collector import QualityCollector
    from rhip.store import Store

    store = Store(url)
    listener = MLLPListener(Pipeline(store, observers=[QualityCollector(store.engine)]), "127.0.0.1", 0)
    await listener.start()
    msgs = [message(i) for i in range(n)]
    t = time.perf_counter()
    results = await asyncio.gather(
        *[
            send_messages("127.0.0.1", listener.port, msgs[c::connections], timeout=300)
            for c in range(connections)
        ]
    )
    rate = n / (time.perf_counter() - t)
    await listener.stop()
    codes: dict[str, int] = {}
    for ack in (a for r in results for a in r):
        code = ack_of(ack)["code"]
        codes[code] = codes.get(code, 0) + 1
    store.close()
    return rate, codes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--database-url", default=None)
    args = ap.parse_args()
    import hl7

    t = time.perf_counter()
    for i in range(2000):
        hl7.parse(message(i))
    parse_rate = 2000 / (time.perf_counter() - t)
    echo = asyncio.run(_echo_limit(2000))
    with tempfile.TemporaryDirectory() as d:
        url = args.database_url or f"sqlite:///{Path(d) / 'mllp.sqlite'}"
        rate, codes = asyncio.run(_run(url, args.messages, args.connections))
    print(f"\n{args.messages:,} ADT^A04 messages over {args.connections} MLLP connections\n")
    print(f"{'measure':<44}{'messages/s':>12}")
    print(f"{'raw python-hl7 parse':<44}{parse_rate:>12,.0f}")
    print(f"{'raw TCP echo round trip (1 connection)':<44}{echo:>12,.0f}")
    print(f"{'acknowledged end to end (stored + ACK)':<44}{rate:>12,.0f}")
    print(f"\nACK codes: {codes}")


if __name__ == "__main__":
    main()
