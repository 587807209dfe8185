"""Insurance claims (医保结算) of encounters, with known injected anomalies for claim audit.

Costs follow the national means per tier (lognormal); inpatient claims are itemised by the usual
fee categories. A small share of claims gets one problem injected — duplicate billing, a
sex/diagnosis mismatch, upcoding or unbundling — and the ground truth lists every one of them.
"""

from __future__ import annotations

import math
import random
from typing import Any

from rhip.synth.model import Claim, Encounter

_INPATIENT_ITEMS = (
    ("床位费", 0.08),
    ("护理费", 0.05),
    ("西药费", 0.28),
    ("检查费", 0.14),
    ("化验费", 0.12),
    ("治疗费", 0.15),
    ("卫生材料费", 0.10),
    ("诊察费", 0.03),
    ("其他费", 0.05),
)
_OUTPATIENT_ITEMS = (("挂号费", 0.05), ("诊察费", 0.10), ("西药费", 0.55), ("化验费", 0.20), ("检查费", 0.10))
_FREE = ("followup", "vaccination")  # basic public-health services are not claimed


def _lognormal(rng: random.Random, mean: float, sigma: float) -> float:
    return rng.lognormvariate(math.log(mean) - sigma**2 / 2, sigma)


def make_claims(enc: Encounter, rng: random.Random, params: dict[str, Any], catalog: dict[str, Any]) -> None:
    """Attach the claim (and any injected duplicate) of ``enc``; costs in CNY with two decimals."""
    if enc.kind in _FREE or enc.patient.resident.social_security is None:
        return
    cfg = params["inpatient"]
    tier = enc.patient.facility.tier
    if enc.kind in ("inpatient", "delivery"):
        days = max(1, (enc.end - enc.start).days)
        total = _lognormal(rng, cfg["cost_per_day"][tier] * days, cfg["cost_sigma"])
        if enc.procedures:
            total *= 1.6
        shares: tuple[tuple[str, float], ...] = _INPATIENT_ITEMS
    else:
        total = _lognormal(rng, cfg["outpatient_cost_mean"][tier], 0.6)
        shares = _OUTPATIENT_ITEMS
    items = [(name, round(total * share, 2)) for name, share in shares]
    for code, name in enc.procedures:
        items.append((f"手术费:{code} {name}", round(total * 0.12, 2)))
    claim = Claim(
        f"{rng.getrandbits(64):016x}", items, list(enc.diagnoses), round(sum(a for _, a in items), 2)
    )
    enc.claims.append(claim)
    ccfg = params["claims"]
    if rng.random() >= ccfg["anomaly_rate"]:
        return
    kinds = ccfg["kinds"]
    kind = rng.choices(list(kinds), weights=list(kinds.values()))[0]
    an = catalog["anomalies"]
    if kind == "duplicate_billing":
        dup = Claim(
            f"{rng.getrandbits(64):016x}", list(items), list(claim.diagnoses), claim.total, kind, claim.id
        )
        enc.claims.append(dup)
        return
    if kind == "sex_diagnosis_mismatch":
        spec = an["female_only"] if enc.patient.resident.sex == "male" else an["male_only"]
        claim.diagnoses.append((spec["code"], spec["name"]))
    elif kind == "upcoding":
        claim.diagnoses.append((an["upcode"]["code"], an["upcode"]["name"]))
        claim.items = [(n, round(a * 1.35, 2)) for n, a in claim.items]
    else:  # unbundling: one fee split into parts that are billed separately, inflating the total
        name, amount = claim.items.pop(rng.randrange(len(claim.items)))
        for part, share in an["unbundle_items"]:
            claim.items.append((f"{name}-{part}", round(amount * share * 1.4, 2)))
    claim.anomaly = kind
    claim.total = round(sum(a for _, a in claim.items), 2)
