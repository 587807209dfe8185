"""Wearable device streams: one JSON message per minute per device, LOINC-coded measurements.

Heart rate, SpO2 and respiration every minute, temperature every 10 minutes, blood pressure every
15 minutes, with a daily rhythm and noise; injected deterioration episodes (listed in
truth/deteriorations.csv) push the affected signals out of range for their duration.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta
from typing import Any

import orjson

from rhip.fhir import systems
from rhip.synth.model import Life, WearableStream
from rhip.synth.writers.base import Appends, Buffer, Writer, register_writer

SIGNALS = {
    "hr": ("8867-4", "Heart rate", "/min"),
    "spo2": ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%"),
    "rr": ("9279-1", "Respiratory rate", "/min"),
    "temp": ("8310-5", "Body temperature", "Cel"),
    "sbp": ("8480-6", "Systolic blood pressure", "mm[Hg]"),
    "dbp": ("8462-4", "Diastolic blood pressure", "mm[Hg]"),
}
_EFFECT = {  # signal shifts at the peak of an episode
    "hypoxaemia": {"spo2": -12.0, "rr": 9.0, "hr": 18.0},
    "tachycardia": {"hr": 55.0, "sbp": -12.0},
    "fever": {"temp": 2.2, "hr": 22.0, "rr": 5.0},
    "hypertensive-crisis": {"sbp": 55.0, "dbp": 28.0, "hr": 10.0},
}


def messages(stream: WearableStream) -> list[dict[str, Any]]:
    """All messages of one device stream, in time order."""
    rng = random.Random(stream.device_id)
    base = {
        "hr": rng.gauss(74, 6),
        "spo2": rng.gauss(96.8, 0.8),
        "rr": rng.gauss(16, 1.5),
        "temp": 36.5,
        "sbp": rng.gauss(138, 10),
        "dbp": rng.gauss(84, 6),
    }
    patient = {"system": stream.patient_identifier[0], "value": stream.patient_identifier[1]}
    out = []
    for minute in range(stream.minutes):
        at: datetime = stream.start + timedelta(minutes=minute)
        circadian = math.sin(2 * math.pi * (at.hour * 60 + at.minute - 480) / 1440)
        shift = dict.fromkeys(base, 0.0)
        for start, end, kind in stream.episodes:
            if start <= at < end:
                total = (end - start).total_seconds()
                ramp = min(1.0, (at - start).total_seconds() / max(1.0, total / 4))
                for sig, delta in _EFFECT[kind].items():
                    shift[sig] += delta * ramp
        values: dict[str, float] = {
            "hr": round(base["hr"] + 6 * circadian + rng.gauss(0, 2.5) + shift["hr"]),
            "spo2": min(100, round(base["spo2"] + rng.gauss(0, 0.6) + shift["spo2"])),
            "rr": round(base["rr"] + rng.gauss(0, 1.0) + shift["rr"]),
        }
        if minute % 10 == 0:
            values["temp"] = round(base["temp"] + 0.3 * circadian + rng.gauss(0, 0.1) + shift["temp"], 1)
        if minute % 15 == 0:
            values["sbp"] = round(base["sbp"] + 6 * circadian + rng.gauss(0, 4) + shift["sbp"])
            values["dbp"] = round(base["dbp"] + 3 * circadian + rng.gauss(0, 3) + shift["dbp"])
        out.append(
            {
                "device_id": stream.device_id,
                "patient": patient,
                "timestamp": at.isoformat() + "+08:00",
                "measurements": [
                    {
                        "system": systems.LOINC,
                        "code": SIGNALS[k][0],
                        "display": SIGNALS[k][1],
                        "value": v,
                        "unit": SIGNALS[k][2],
                    }
                    for k, v in values.items()
                ],
            }
        )
    return out


@register_writer("wearable")
class WearableWriter(Writer):
    """``wearable/<device_id>.jsonl`` per device and ``wearable/devices.csv`` listing them."""

    def headers(self) -> dict[str, bytes]:
        return {"wearable/devices.csv": b"device_id,identifier_system,identifier_value,start,minutes\n"}

    def render(self, lives: list[Life], chunk: int) -> Appends:
        buf = Buffer()
        for life in lives:
            s = life.wearable
            if s is None:
                continue
            msgs = messages(s)
            buf.put(
                f"wearable/{s.device_id}.jsonl", b"".join(orjson.dumps(m) + b"\n" for m in msgs), len(msgs)
            )
            system, value = s.patient_identifier
            line = f"{s.device_id},{system},{value},{s.start:%Y-%m-%dT%H:%M:%S}+08:00,{s.minutes}\n"
            buf.put("wearable/devices.csv", line.encode())
        return buf.result()
