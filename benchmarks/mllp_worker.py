"""The MLLP listener's write worker without sockets: where a message's CPU goes, stage by stage.

Frames of the ``ingest_mllp.py`` benchmark message (ADT^A04) go through the listener's own
``_batch`` (frames to records) and ``_run`` (parse, map, canonicalise, validate, look-ups, the
store's write and commit, bookkeeping, ACKs) in batches of ``--batch``, on an SQLite store in a
temporary directory with the quality collector and the listener's checkpoint thread, as the
listener runs them; no event loop, no sockets, no senders. Prints the worker thread's CPU per
message and, with ``--stages``, the CPU of each stage (timers wrapped around the named
functions; a stage includes the stages it calls).

The machine is shared and CPU times move by ±15 % from run to run; instruction counts do not.
For those, run the script under cachegrind twice and take the difference per message (the
imports and the warm-up cancel out), checkpointing every 500 messages (the listener checkpoints
twice a second, which under valgrind would be every few messages)::

    valgrind --tool=cachegrind --cache-sim=no .venv/bin/python benchmarks/mllp_worker.py \
        --warm 100 --messages 200 --checkpoint-every 500
    valgrind --tool=cachegrind --cache-sim=no .venv/bin/python benchmarks/mllp_worker.py \
        --warm 100 --messages 600 --checkpoint-every 500
    # (I refs of the second - I refs of the first) / 400 = instructions per message

Usage: .venv/bin/python benchmarks/mllp_worker.py [--messages 4000] [--warm 400] [--batch 40] [--stages]
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: (module, object, attribute, label): the functions timed with --stages, outermost first.
STAGES = [
    ("rhip.ingest.mllp", "MLLPListener", "_batch", "frames to records (_batch)"),
    ("rhip.ingest.pipeline", "Pipeline", "process_chunk", "the chunk (process_chunk)"),
    ("rhip.ingest.pipeline", "Pipeline", "_delivered", "  delivery-key look-up"),
    ("rhip.ingest.pipeline", "RecordPreparer", "map_record", "  parse, map, canonicalise, validate"),
    ("rhip.ingest.hl7v2_map", None, "parse", "    hl7v2.parse (python-hl7 and the checks)"),
    ("rhip.ingest.hl7v2", None, "_python_hl7_parse", "      python-hl7 parse"),
    ("hl7", None, "parse", "      python-hl7 parse"),  # trees before the plans were reused
    ("rhip.ingest.pipeline", "Pipeline", "_stale", "  source-time look-up (_stale)"),
    ("rhip.ingest.pipeline", "Pipeline", "_commit", "  transaction (_commit)"),
    ("rhip.ingest.pipeline", "Pipeline", "_plan", "    Provenance, encryption, index rows (_plan)"),
    ("rhip.ingest.pipeline", "Pipeline", "_write", "    resource, version and index rows (_write)"),
    ("rhip.ingest.pipeline", "Pipeline", "_finish_chunk", "    bookkeeping rows (_finish_chunk)"),
    ("rhip.ingest.mllp", "MLLPListener", "_acks", "ACKs and per-facility counts (_acks)"),
]


def _wrap(totals: dict[str, float], owner: Any, name: str, label: str) -> None:
    fn: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[label] = totals.get(label, 0.0) + time.thread_time() - start

    setattr(owner, name, timed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=4000, help="messages measured (after the warm-up)")
    ap.add_argument("--warm", type=int, default=400, help="messages written before measuring")
    ap.add_argument("--batch", type=int, default=40, help="messages per batch (one transaction)")
    ap.add_argument("--stages", action="store_true", help="time each stage (adds ≈ 1 µs per timed call)")
    ap.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        help="checkpoint the log after every N messages, on this thread (default: the listener's "
        "checkpoint thread, twice a second; give N for counts that do not depend on speed)",
    )
    args = ap.parse_args()
    data = tempfile.mkdtemp(prefix="rhip-mllp-worker-")
    os.environ.setdefault("RHIP_DATA_DIR", data)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import importlib

    from ingest_mllp import message

    from rhip.ingest import hl7v2_map  # noqa: F401  (registers the mapper)
    from rhip.ingest.mllp import MLLPListener, _Item
    from rhip.ingest.pipeline import Pipeline
    from rhip.ingest.producer import BULK_GC_THRESHOLDS
    from rhip.quality.collector import QualityCollector
    from rhip.store import Store

    totals: dict[str, float] = {}
    if args.stages:
        for module, owner, name, label in STAGES:
            mod = importlib.import_module(module)
            target = getattr(mod, owner) if owner else mod
            if hasattr(target, name):  # a tree without it (the script also runs on older trees)
                _wrap(totals, target, name, label)
    store = Store(f"sqlite:///{data}/worker.sqlite")
    pipeline = Pipeline(store, observers=[QualityCollector(store.engine)])
    listener = MLLPListener(pipeline, "127.0.0.1", 0)
    if args.checkpoint_every:
        listener._checkpoints.interval = 1e9  # the thread checkpoints once; then run() does
    listener._checkpoints.start()
    gc.set_threshold(*BULK_GC_THRESHOLDS)  # as the listener sets it while serving

    def run(first: int, n: int) -> None:
        raws = [message(i).encode() for i in range(first, first + n)]
        for start in range(0, n, args.batch):
            part = raws[start : start + args.batch]
            items = [_Item(raw, f"127.0.0.1:{5000 + k}", None) for k, raw in enumerate(part)]  # type: ignore[arg-type]
            acks = listener._run(listener._batch(items), None)
            if not all("MSA|AA|" in ack for ack in acks):
                raise SystemExit(f"unexpected ACK: {acks[0]!r}")
            every = args.checkpoint_every
            if every and (first + start) // every != (first + start + len(part)) // every:
                listener._checkpoints._checkpoint()

    run(0, args.warm)
    totals.clear()
    wall, cpu = time.perf_counter(), time.thread_time()
    run(args.warm, args.messages)
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    listener._checkpoints.stop()
    store.close()
    load = os.getloadavg()
    print(
        f"{args.messages:,} messages in batches of {args.batch}, after {args.warm:,}; "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    per = 1e6 / args.messages
    print(f"worker thread CPU {cpu * per:,.0f} µs per message (wall {wall * per:,.0f})")
    for label in dict.fromkeys(label for _module, _owner, _name, label in STAGES):
        if label in totals:
            print(f"  {label:<52}{totals[label] / args.messages * 1e6:8.1f}")


if __name__ == "__main__":
    main()
