"""Device readings over MQTT: the subscriber's CPU per message, a source tree against another.

Each run starts a fresh subprocess whose ``PYTHONPATH`` is the source tree under test (``--base``
for the code to compare with, this checkout's ``src`` for the other): it runs
``rhip.ingest.device.MqttSubscriber`` on a fresh SQLite store, subscribed to a topic of its own on
the broker. This process then publishes ``--messages`` readings (one per message, QoS 1, each
waiting for the broker's PUBACK) at ``--rate`` messages/s, below what the subscriber can take so
the broker never has to queue more than its limit (Mosquitto: 1000 per client) and drop some.
The child reports its CPU seconds and wall time from its first message to the last one stored,
and its mean batch;
with --rounds the trees alternate. Prints the load average at the start and the end.

Usage: .venv/bin/python benchmarks/ingest_mqtt.py --base /tmp/mqtt-base/src [--messages 3000]
       [--rate 600] [--rounds 3] [--broker 127.0.0.1:1883]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, tempfile, threading, time
from rhip.ingest import runner  # registers the mappers
from rhip.ingest.device import MqttSubscriber
from rhip.ingest.pipeline import Pipeline
from rhip.store import Store

broker, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
folder = tempfile.mkdtemp(prefix="mqtt-bench-")
pipeline = Pipeline(Store(f"sqlite:///{folder}/bench.sqlite"))
sub = MqttSubscriber(pipeline, broker, topic)
first = []
batches = []
ingest = sub._ingest
def timed(batch):
    if not first:
        first.append((time.perf_counter(), time.process_time()))
    batches.append(len(batch))
    ingest(batch)
sub._ingest = timed
def announce():
    sub.subscribed.wait()
    print("ready", flush=True)
threading.Thread(target=announce, daemon=True).start()
report = sub.run(threading.Event(), max_messages=n)
wall, cpu = time.perf_counter() - first[0][0], time.process_time() - first[0][1]
figures = {"received": report.received, "stored": report.stored, "wall": wall, "cpu": cpu}
print(json.dumps({**figures, "batch": sum(batches) / len(batches)}))
"""


def one_run(src: Path, broker: str, messages: int, rate: float) -> dict[str, float]:
    """One subscriber process on ``src``; this process publishes; returns the child's figures."""
    import paho.mqtt.client as mqtt

    sys.path.insert(0, str(ROOT / "tests" / "ingest"))
    sys.path.insert(0, str(ROOT / "tests"))
    from mqtt_broker import reading

    topic = f"rhip-bench/{uuid.uuid4().hex}/WEAR"
    env = {**os.environ, "PYTHONPATH": str(src), "RHIP_MQTT_SESSION_EXPIRY": "60"}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, f"mqtt://{broker}", topic, str(messages)],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    host, port = broker.split(":")
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    pub.connect(host, int(port))
    pub.loop_start()
    start = time.perf_counter()
    for n in range(messages):
        pub.publish(topic, reading(n), qos=1).wait_for_publish(10)
        lag = start + (n + 1) / rate - time.perf_counter()
        if lag > 0:
            time.sleep(lag)
    pub.disconnect()
    pub.loop_stop()
    out, _ = child.communicate(timeout=300)
    figures: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", type=Path, required=True, help="src folder of the tree to compare with.")
    parser.add_argument("--messages", type=int, default=3000, help="Readings per run (one per message).")
    parser.add_argument("--rate", type=float, default=600, help="Messages published per second.")
    parser.add_argument("--rounds", type=int, default=3, help="Runs of each tree, alternating.")
    parser.add_argument("--broker", default="127.0.0.1:1883", help="host:port of the broker.")
    args = parser.parse_args()
    print(
        f"load average at start: {os.getloadavg()}; {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC"
    )
    trees = {"base": args.base, "new": ROOT / "src"}
    per_message: dict[str, list[float]] = {"base": [], "new": []}
    for r in range(args.rounds):
        for name, src in trees.items():
            f = one_run(src, args.broker, args.messages, args.rate)
            ms = 1000 * f["cpu"] / f["received"]
            per_message[name].append(ms)
            print(
                f"round {r + 1} {name}: received {f['received']:.0f} stored {f['stored']:.0f}, "
                f"{f['received'] / f['wall']:,.0f} msg/s wall, {ms:.3f} ms CPU per message, "
                f"mean batch {f['batch']:.0f} messages"
            )
    for r, (b, n) in enumerate(zip(per_message["base"], per_message["new"], strict=True), 1):
        print(f"round {r}: new/base CPU per message {n / b:.3f}")
    print(f"load average at end: {os.getloadavg()}; {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC")


if __name__ == "__main__":
    main()
