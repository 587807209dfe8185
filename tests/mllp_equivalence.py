"""Dump what the MLLP listener answers and stores for a fixed message set, to prove that an
optimisation of the listener changes nothing.

A real listener (real sockets, an SQLite store in a temporary directory, fixed field keys) is sent:
every HL7 v2 sample file under tests/data as one frame, bad messages of each kind (AE and AR),
messages with LF or CRLF segment ends, a BOM, GB18030 bytes, pipelined frames, re-sent control
ids (duplicates), 300 benchmark messages over one and over eight connections, then older (stale)
and newer versions of stored patients. The dump holds, one line each: every ACK, every stored
body and history row as stored (bytes, SM4 tokens masked) and in clear, every index row, the
quarantine rows, delivery keys, source times, quality tallies, the batch counts and the
listener's per-facility counts. Write times (``meta.lastUpdated``, ``Provenance.recorded``, the
ACK's MSH-7, rows' clocks, arrival delays and batch ids) and the senders' ports are masked;
everything else must be byte-identical. Run it before and after a change, or against another
tree with PYTHONPATH::

    .venv/bin/python tests/mllp_equivalence.py /tmp/before.txt
    ... change ...
    .venv/bin/python tests/mllp_equivalence.py /tmp/after.txt --compare /tmp/before.txt
    PYTHONPATH=/path/to/other/tree/src .venv/bin/python tests/mllp_equivalence.py /tmp/other.txt
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from ingest_equivalence import compare_dumps

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ROOT / "tests" / "data" / "hl7v2" / "messages").glob("*.hl7"))
#: Fixed keys, so that pseudonyms (and therefore the protected bodies' index rows) repeat run to run.
_KEYS = {"sm4": "00112233445566778899aabbccddeeff", "hmac": "11" * 32}
_PORT = re.compile(r"127\.0\.0\.1:\d+")
_ACK_TIME = re.compile(r"\d{14}\+0000")
_TOKEN = re.compile(r"sm4:v(\d+):[A-Za-z0-9_\-+/=]+")

GOOD = (
    "MSH|^~\\&|HIS|H001|RHIP|REGION|{ts}||ADT^A08^ADT_A01|{ctrl}|P|2.5|||||CHN||UNICODE UTF-8\r"
    "EVN|A08|{ts}\r"
    "PID|1||MRN{n}^^^H001^MR~110101199003074514^^^CHN^NNCHN||{family}^三||19900307|M|||"
    "北京市东城区^^北京^^100010||13800138000\r"
    "PV1|1|I|W1^101^1||||D01^李^四|||内科|||||||||V{n}|||||||||||||||||||||||||20261101080000\r"
)
ORU = (
    "MSH|^~\\&|LIS|H001|RHIP|REGION|20261101090000||ORU^R01^ORU_R01|LAB-{n}|P|2.5\r"
    "PID|1||MRN{n}^^^H001^MR||张^三||19900307|M\r"
    "OBR|1||F{n}|24331-1^Lipid panel^LN|||20261101083000\r"
    "OBX|1|NM|2093-3^Cholesterol^LN||{value}|mmol/L|3.0-5.2|N|||F|||20261101083000\r"
)


def _good(n: int, ts: str = "20261101083000", family: str = "张", ctrl: str | None = None) -> str:
    return GOOD.format(n=n, ts=ts, family=family, ctrl=ctrl or f"CTRL-{n}-{ts}")


def _benchmark(first: int, n: int) -> list[str]:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from ingest_mllp import message

    return [message(i) for i in range(first, first + n)]


def _one_by_one() -> list[str | bytes]:
    """Every sample file, bad messages of each kind, odd framing and encodings, duplicates."""
    bad: list[str | bytes] = [
        ORU.format(n=1, value="4.5"),
        ORU.format(n=2, value="not-a-number"),  # content error: AE
        _good(3).replace("19900307", "19901350"),  # month 13: AE
        "MSH|^~\\&|X|H001|Y|Z|20261101||SIU^S12|S-1|P|2.5\rPID|1||M1^^^H001^MR||A^B\r",  # AR
        "MSH|^~\\&|X|H001|Y|Z|20261101||ADT^A99|S-2|P|2.5\rPID|1||M1^^^H001^MR||A^B\r",  # AR event
        "PID|1||M1^^^H001^MR||A^B\r",  # no header: AR
        b"MSH|^~\\&|HIS|H001|R|R|20261101||ADT^A04|E-1|P|2.5\rPID|1||\xff\xfe\r",  # undecodable
        "MSH|^~\\&|HIS|H001|R|R|20261101||ADT^A04|E-2|P|2.5\rPID|1||\r",  # no identifier: AE
        "MSH|^~\\&|HIS|H001|R|R|20261101||ADT^A04|E-3|P|2.5\rP!D|1||M1\r",  # broken segment
        "MSH|^~\\&|HIS|H001|R|R|20261101||ADT^A04||P|2.5\rPID|1||M9^^^H001^MR||A^B\r",  # no MSH-10
        "MSH|^~\\&|HIS|H001|R|R|2026-11-01||ADT^A04|E-4|P|2.5\rPID|1||M8^^^H001^MR||A^B\r",  # bad TS
        "MSH|^~\\&|HIS|H001|R|R|20261101||ADT^A04|E-5|P|2.5\rPID|1||M7^^^H001^MR||A^B||1990|F\r",
        "MSH|^~\\&|HIS|H001|R|R|20261101||^A04|E-6|P|2.5\rPID|1||M6^^^H001^MR\r",  # no type
        "MSH|^~\\&|HIS|H|R|R|20261101||ADT^A04|E|7|P|2.5\rPID|1||a&b^c~~d^^e&&f~||x^y&z^^~^|~|^|&|^&^||~~\r",
        "",  # an empty frame
    ]
    odd: list[str | bytes] = [
        _good(10).replace("\r", "\n"),  # LF segment ends
        _good(11).replace("\r", "\r\n"),  # CRLF
        b"\xef\xbb\xbf" + _good(12).encode(),  # BOM
        _good(13).replace("UNICODE UTF-8", "GB18030").encode("gb18030"),  # declared GB18030
        _good(14).encode("gb18030"),  # undeclared GB18030 (not UTF-8)
        "\r\n" + _good(15) + "\r\n\r\n",  # blank lines around
        _good(16) + _good(17),  # two messages in one frame
    ]
    samples: list[str | bytes] = [path.read_bytes() for path in SAMPLES]
    good: list[str | bytes] = [_good(n) for n in range(3)]
    return [*samples, *bad, *odd, *good, *good]  # the second three are duplicates by control id


async def _exchange(listener: Any) -> Iterator[tuple[str, str]]:
    from rhip.ingest.mllp import frame, send_messages

    acks: list[tuple[str, str]] = []
    await listener.start()
    try:
        port = listener.port

        async def send(label: str, messages: list[Any]) -> None:
            acks.extend((label, a) for a in await send_messages("127.0.0.1", port, messages))

        await send("one-by-one", _one_by_one())
        # pipelined: three frames in one write, answered in order
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"".join(frame(_good(n)) for n in (20, 21, 20)))
        await writer.drain()
        for _ in range(3):
            data = await reader.readuntil(b"\x1c\r")
            acks.append(("pipelined", data[data.find(b"\x0b") + 1 : -2].decode()))
        writer.close()
        await writer.wait_closed()
        await send("bench-1", _benchmark(0, 100))
        per = _benchmark(100, 200)
        results = await asyncio.gather(
            *[send_messages("127.0.0.1", port, per[c::8]) for c in range(8)]
        )  # batches differ run to run; each connection's patients are its own, so outcomes do not
        acks.extend((f"bench-8/{c}", a) for c, r in enumerate(results) for a in r)
        await send("resent", _benchmark(0, 10) + _benchmark(100, 10))
        await send("stale", [_good(n, ts="20251101083000", family="李") for n in range(3)])
        await send("newer", [_good(n, ts="20271101083000", family="王") for n in range(3)])
        await send("newer-again", [_good(n, ts="20271101083000", family="王") for n in range(3)])
    finally:
        await listener.stop()
    return iter(acks)


def _mask(text: str) -> str:
    return _TOKEN.sub(r"sm4:v\1:<token>", _PORT.sub("127.0.0.1:<port>", text))


def _clear(body: dict[str, Any]) -> dict[str, Any]:
    meta = body.get("meta")
    if isinstance(meta, dict) and "lastUpdated" in meta:
        meta["lastUpdated"] = "<t>"
    if body.get("resourceType") == "Provenance" and "recorded" in body:
        body["recorded"] = "<t>"
    return body


def _stored_bytes(body: bytes) -> str:
    """A body as stored, its write times masked (the bytes otherwise as they are)."""
    text = body.decode()
    text = re.sub(r'"lastUpdated":"[^"]*"', '"lastUpdated":"<t>"', text)
    if text.startswith('{"resourceType":"Provenance"'):
        text = re.sub(r'"recorded":"[^"]*"', '"recorded":"<t>"', text)
    return text


def dump(out: Path) -> int:
    """Run the exchange and write the dump to ``out``; returns the number of ACKs."""
    from sqlalchemy import text

    from rhip.ingest import hl7v2_map  # noqa: F401  (registers the mapper)
    from rhip.ingest.mllp import MLLPListener
    from rhip.ingest.pipeline import Pipeline
    from rhip.quality.collector import QualityCollector
    from rhip.store import Store, fieldcrypt
    from rhip.store.index_schema import INDEX_TABLES

    with tempfile.TemporaryDirectory() as d:
        store = Store(f"sqlite:///{d}/eq.sqlite")
        try:
            pipeline = Pipeline(store, observers=[QualityCollector(store.engine)])
            listener = MLLPListener(pipeline, "127.0.0.1", 0, batch_wait=0.02, prepare_process=False)
            acks = list(asyncio.run(_exchange(listener)))
            crypt = fieldcrypt.of(store.engine)
            lines: list[str] = []

            def w(kind: str, value: Any) -> None:
                lines.append(_mask(f"{kind}\t{value!r}"))

            for label, ack in acks:
                w("ack", (label, _ACK_TIME.sub("<now>", ack)))
            with store.engine.connect() as conn:
                for table in ("resource", "resource_version"):
                    order = "ORDER BY res_type, res_id, version_id"
                    for row in conn.execute(text(f"SELECT * FROM {table} {order}")):
                        values = dict(row._mapping)
                        body = values.pop("body")
                        values.pop("last_updated")
                        w(f"{table}-row", sorted(values.items()))
                        if body is not None:
                            w(f"{table}-bytes", _stored_bytes(bytes(body)))
                            w(
                                f"{table}-clear",
                                orjson.dumps(_clear(crypt.loads(bytes(body))), option=orjson.OPT_SORT_KEYS),
                            )
                for table in INDEX_TABLES:
                    rows = []
                    for row in conn.execute(text(f"SELECT * FROM {table.name}")):
                        values = dict(row._mapping)
                        if values.get("param") in ("recorded", "_lastUpdated"):
                            values = {k: ("<t>" if k in ("low", "high") else v) for k, v in values.items()}
                        rows.append(_mask(repr(sorted(values.items()))))
                    for r in sorted(rows):
                        w(f"index-{table.name}", r)
                for row in conn.execute(text("SELECT * FROM ingest_quarantine ORDER BY key")):
                    values = {k: v for k, v in row._mapping.items() if k not in ("created", "batch_id")}
                    w("quarantine", sorted(values.items()))
                for row in conn.execute(text("SELECT key FROM ingest_delivery ORDER BY key")):
                    w("delivery", row[0])
                for row in conn.execute(text("SELECT * FROM ingest_source_time ORDER BY res_type, res_id")):
                    w("source-time", tuple(row))
                tallies = [  # delay_sum: arrival (now) minus event time
                    sorted((k, "<t>" if k == "delay_sum" else v) for k, v in row._mapping.items())
                    for row in conn.execute(text("SELECT * FROM quality_tally"))
                ]
                for tally in sorted(tallies, key=repr):  # rows in the order batches wrote them
                    w("quality", tally)
                counts = "received, stored, quarantined, duplicates, stale"
                for row in conn.execute(text(f"SELECT facility, connector, {counts} FROM ingest_batch")):
                    w("batch", tuple(row))
            for facility, rep in sorted(listener.reports.items()):
                counted = (rep.received, rep.stored, rep.quarantined, rep.duplicates, rep.stale)
                w("facility", (facility, *counted, rep.resources_written))
            w("stats", (listener.stats.received, listener.stats.acks))
        finally:
            store.close()
    out.write_text("\n".join(lines) + "\n")
    return len(acks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--compare", type=Path, help="an earlier dump that must be identical")
    args = ap.parse_args()
    keys = Path(tempfile.mkdtemp(prefix="rhip-mllp-eq-"))
    for kind, key in _KEYS.items():
        (keys / "keys" / kind).mkdir(parents=True, exist_ok=True)
        (keys / "keys" / kind / "v1.key").write_text(key)
    os.environ["RHIP_DATA_DIR"] = str(keys)
    n = dump(args.out)
    print(f"{n} ACKs; dump in {args.out}")
    if args.compare:
        compare_dumps(args.compare, args.out)


if __name__ == "__main__":
    main()
