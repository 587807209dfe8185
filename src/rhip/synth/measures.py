"""Lab results and vital signs drawn around the Chinese adult reference intervals (WS/T 404/405).

A condition shifts the analytes it affects out of range, so results carry real clinical signal
(H/L flags, poorly controlled diabetes shows high HbA1c) for quality rules and chronic care.
"""

from __future__ import annotations

import random

from rhip.synth.model import Measure
from rhip.synth.reference import Reference

#: Normal ranges for rows whose interval is blank (decision limits) or qualitative.
_DEFAULT_RANGE = {
    "4548-4": (4.0, 6.0),
    "14647-2": (2.8, 5.2),
    "14927-8": (0.45, 1.7),
    "22748-8": (1.5, 3.4),
    "14933-6": (150.0, 420.0),
    "6598-7": (0.0, 0.014),
    "10839-9": (0.0, 0.04),
    "33762-6": (0.0, 125.0),
    "30934-4": (0.0, 100.0),
    "29463-7": (45.0, 80.0),
    "8302-2": (150.0, 180.0),
}
_QUALITATIVE = {"5196-1", "5804-0"}
_DECIMALS = {"g/L": 0, "U/L": 0, "umol/L": 0, "mm[Hg]": 0, "/min": 0, "%": 1, "ng/L": 0, "mg/dL": 0}


def _range(ref: Reference, loinc: str) -> tuple[float, float]:
    row = ref.labs[loinc]
    if loinc in _DEFAULT_RANGE:
        return _DEFAULT_RANGE[loinc]
    lo = float(row["ref_low"]) if row["ref_low"] else 0.0
    hi = float(row["ref_high"]) if row["ref_high"] else lo * 2 + 1
    return lo, hi


def measure(rng: random.Random, ref: Reference, loinc: str, shift: float = 0.0) -> Measure:
    """One result for ``loinc``; ``shift`` moves it in units of the interval width (+1 = one width up)."""
    row = ref.labs[loinc]
    if loinc in _QUALITATIVE:
        positive = rng.random() < (0.8 if shift > 0 else 0.03)
        value: float | str = "阳性" if positive else "阴性"
        return Measure(
            loinc, row["display"], row["name_zh"], value, row["unit"], "", "", "A" if positive else "N"
        )
    lo, hi = _range(ref, loinc)
    width = hi - lo
    x = lo + width * (0.5 + shift) + rng.gauss(0.0, width * 0.22)
    x = max(x, lo * 0.3 if lo > 0 else 0.0)
    decimals = _DECIMALS.get(row["unit"], 2)
    x = round(x, decimals) if decimals else float(round(x))
    flag = "H" if x > hi else "L" if x < lo else "N"
    return Measure(loinc, row["display"], row["name_zh"], x, row["unit"], f"{lo:g}", f"{hi:g}", flag)


def vitals(
    rng: random.Random,
    ref: Reference,
    *,
    sbp: float = 122.0,
    dbp: float = 78.0,
    fever: bool = False,
    child: bool = False,
) -> list[Measure]:
    """Blood pressure, heart rate, temperature, respiration and SpO2 of one encounter."""
    out: list[Measure] = []

    def add(loinc: str, value: float, lo: str, hi: str) -> None:
        row = ref.labs[loinc]
        flag = "H" if value > float(hi) else "L" if value < float(lo) else "N"
        out.append(Measure(loinc, row["display"], row["name_zh"], value, row["unit"], lo, hi, flag))

    if not child:
        add("8480-6", float(round(rng.gauss(sbp, 7))), "90", "139")
        add("8462-4", float(round(rng.gauss(dbp, 5))), "60", "89")
    add(
        "8867-4",
        float(round(rng.gauss(96 if child else 76, 8) + (12 if fever else 0))),
        "60",
        "100" if not child else "140",
    )
    add("8310-5", round(rng.gauss(38.6, 0.5) if fever else rng.gauss(36.6, 0.2), 1), "36.0", "37.3")
    add("9279-1", float(round(rng.gauss(22 if child else 16, 2))), "12", "30" if child else "20")
    add("59408-5", float(min(100, round(rng.gauss(97.5, 1.0)))), "95", "100")
    return out
