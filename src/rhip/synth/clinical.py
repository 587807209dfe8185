"""Health histories: chronic disease, acute care, admissions, infections, maternity, vaccination.

Each resident's history comes from their own random stream. Rates are per person-year by age band
(params.yaml); tiers are chosen by the shares of the national statistics; every encounter is
recorded at a facility under that facility's own (noisy) record of the resident.
"""

from __future__ import annotations

import math
import random
from datetime import date, datetime, timedelta
from typing import Any

from rhip.synth.claims import make_claims
from rhip.synth.identity import SourceBook, birthday_shift, permute
from rhip.synth.measures import measure, vitals
from rhip.synth.model import Encounter, Facility, Imaging, Life, Medication, Resident
from rhip.synth.reference import Reference
from rhip.synth.region import Region

CHRONIC = ("hypertension", "diabetes", "copd", "chd", "stroke")
_CHRONIC_BANDS = (18, 35, 45, 55, 65, 75)
_UTIL_BANDS = (0, 5, 15, 45, 65)


def _band(age: float, bands: tuple[int, ...]) -> int:
    idx = -1
    for i, lo in enumerate(bands):
        if age >= lo:
            idx = i
    return idx


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw (Knuth for small means, normal approximation above 30)."""
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def uid(rng: random.Random) -> str:
    """A 16-hex-digit id that reveals nothing about the resident."""
    return f"{rng.getrandbits(64):016x}"


def dicom_uid(rng: random.Random) -> str:
    """A DICOM UID under the 2.25 (UUID-derived) root."""
    return f"2.25.{rng.getrandbits(120)}"


class LifeBuilder:
    """Builds the :class:`Life` of one resident inside the period ``window``."""

    def __init__(self, resident: Resident, rng: random.Random, ctx: dict[str, Any]) -> None:
        self.r = resident
        self.rng = rng
        self.params: dict[str, Any] = ctx["params"]
        self.ref: Reference = ctx["ref"]
        self.region: Region = ctx["region"]
        self.start, self.end = ctx["window"]
        self.cat = self.ref.catalog
        self.book = SourceBook(resident, rng, self.ref, self.params)
        self.encounters: list[Encounter] = []
        self.alive_from = max(self.start, resident.birth)
        self.alive_to = self.end
        prim = self.region.tier("primary", resident.district)
        self.home_primary = prim[int(resident.household[2:]) % len(prim)]
        sec = self.region.tier("secondary", resident.district)
        self.home_secondary = sec[0] if sec else self.home_primary
        tert = self.region.tier("tertiary")
        self.fav_tertiary = tert[rng.randrange(len(tert))]
        self.tertiary = tert

    # --- helpers -------------------------------------------------------------------------
    def age(self, on: date) -> float:
        return (on - self.r.birth).days / 365.25

    def years_alive(self) -> float:
        return max(0.0, (self.alive_to - self.alive_from).days / 365.25)

    def moment(self, lo: date, hi: date, hour: tuple[int, int] = (8, 17)) -> datetime:
        span = max(0, (hi - lo).days)
        day = lo + timedelta(days=self.rng.randint(0, span))
        return datetime(
            day.year,
            day.month,
            day.day,
            self.rng.randint(*hour),
            self.rng.randrange(60),
            self.rng.randrange(60),
        )

    def facility(self, tier: str) -> Facility:
        if tier == "primary":
            return self.home_primary
        if tier == "secondary":
            return self.home_secondary
        return self.fav_tertiary if self.rng.random() < 0.7 else self.rng.choice(self.tertiary)

    def tier(self, shares: dict[str, float]) -> str:
        return self.rng.choices(list(shares), weights=list(shares.values()))[0]

    def meds(self, keys: list[str], days: int) -> list[Medication]:
        out = []
        for key in keys:
            code, name, atc, strength, dose, unit, route = self.cat["drugs"][key]
            out.append(Medication(code, name, atc, strength, float(dose), unit, route, days))
        return out

    def encounter(
        self, fac: Facility, kind: str, start: datetime, end: datetime, dept: str, dx: list[tuple[str, str]]
    ) -> Encounter:
        depts = [
            p for p in fac.practitioners if p.department == dept and p.role == "doctor"
        ] or fac.practitioners
        dept = dept if dept in fac.departments else fac.departments[0]
        enc = Encounter(
            uid(self.rng),
            self.book.record(fac, start.date()),
            kind,
            start,
            end,
            dept,
            self.rng.choice(depts),
            dx,
        )
        self.encounters.append(enc)
        return enc

    def imaging(self, enc: Encounter, spec: list[str] | None) -> None:
        if spec:
            enc.imaging = Imaging(
                dicom_uid(self.rng),
                dicom_uid(self.rng),
                dicom_uid(self.rng),
                spec[0],
                spec[1],
                spec[2],
                spec[3],
            )

    # --- the life ------------------------------------------------------------------------
    def build(self, plan: list[dict[str, Any]], births: list[tuple[int, int]]) -> Life:
        """Generate the history; ``births`` are (birth ordinal, child index) of this mother's babies."""
        self.births = births
        lo, hi = self.start.toordinal(), self.end.toordinal()
        if any(lo <= born <= hi for born, _child in births):
            self.r.maternal_child_card = maternal_child_card(self.r.index, self.r.district)
        elif self.r.mother >= 0 and self.r.birth >= self.start:  # the baby shares the mother's handbook
            self.r.maternal_child_card = maternal_child_card(self.r.mother, self.r.district)
        self._death()
        chronic = self._chronic()
        if self.years_alive() > 0:
            self._acute()
            self._inpatient()
            self._infections(plan)
            self._vaccination()
        self.encounters.sort(key=lambda e: (e.start, e.id))
        self._truncate_at_death()
        for enc in self.encounters:
            make_claims(enc, self.rng, self.params, self.cat)
        used = {id(e.patient) for e in self.encounters}
        sources = [s for s in self.book.order if id(s) in used]
        kept = {(s.facility.code, s.source_id) for s in sources}
        for s in sources:
            if s.merged_into is not None and (s.facility.code, s.merged_into) not in kept:
                s.merged_into = None  # the surviving record was never used: nothing to merge into
        return Life(self.r, sources, self.encounters, chronic)

    def _death(self) -> None:
        m = self.params["mortality"]
        day = self.alive_from
        while day < self.end:
            age = self.age(day)
            q = m["infant"] if age < 1 else min(0.35, m["gompertz_a"] * math.exp(m["gompertz_b"] * age))
            if self.rng.random() < q:
                self.r.death = day + timedelta(days=self.rng.randrange(365))
                if self.r.death > self.end:
                    self.r.death = None
                else:
                    self.alive_to = self.r.death
                return
            day += timedelta(days=365)

    def _truncate_at_death(self) -> None:
        for i, enc in enumerate(self.encounters):
            if enc.outcome == "died":
                self.r.death = enc.end.date()
                del self.encounters[i + 1 :]
                return
        if self.r.death is not None:
            self.encounters = [e for e in self.encounters if e.start.date() <= self.r.death]

    def _chronic(self) -> list[tuple[str, date]]:
        cfg = self.params["chronic"]
        age_end = self.age(self.end)
        band = _band(age_end, _CHRONIC_BANDS)
        found: list[tuple[str, date]] = []
        if band < 0:
            return found
        for disease in CHRONIC:
            if self.rng.random() >= cfg[disease][band]:
                continue
            back = self.rng.uniform(0, min(15.0, age_end - 17.5))
            onset = self.end - timedelta(days=int(back * 365.25))
            found.append((disease, onset))
            if self.years_alive() > 0:
                self._manage(disease, onset, self.rng.random() < cfg["control_rate"][disease])
        return found

    def _manage(self, disease: str, onset: date, controlled: bool) -> None:
        cfg, spec = self.params["chronic"], self.cat["chronic"][disease]
        dx = [(spec["code"], spec["name"])]
        first = max(onset, self.alive_from)
        if onset >= self.alive_from:  # diagnosed during the period, at a hospital
            enc = self.encounter(
                self.facility(self.tier({"secondary": 0.5, "tertiary": 0.5})),
                "outpatient",
                self.moment(onset, onset),
                self.moment(onset, onset),
                "内科",
                dx,
            )
            self._fill(enc, spec, shift=1.2)
            enc.meds = self.meds(spec["drugs"], 30)
        if disease in ("hypertension", "diabetes"):
            n_years = (self.alive_to - first).days / 365.25
            for k in range(int(n_years * cfg["followups_per_year"])):
                if self.rng.random() > cfg["followup_attendance"]:
                    continue
                day = first + timedelta(
                    days=int((k + self.rng.random()) * 365.25 / cfg["followups_per_year"])
                )
                if day > self.alive_to:
                    break
                ok = controlled or (k > 4 and self.rng.random() < 0.3)  # some improve with management
                enc = self.encounter(
                    self.home_primary,
                    "followup",
                    self.moment(day, day),
                    self.moment(day, day, (17, 17)),
                    "全科",
                    dx,
                )
                enc.followup = (disease, ok)
                sbp, dbp = (128.0, 80.0) if ok else (156.0, 94.0)
                enc.vitals = vitals(
                    self.rng,
                    self.ref,
                    sbp=sbp if disease == "hypertension" else 128.0,
                    dbp=dbp if disease == "hypertension" else 80.0,
                )
                if disease == "diabetes":
                    enc.labs = [measure(self.rng, self.ref, "14771-0", 0.6 if ok else 2.2)]
                enc.meds = self.meds(spec["drugs"][:1], 90)
        for _ in range(poisson(self.rng, cfg_extra(self.params) * self.years_alive())):
            enc = self.encounter(
                self.facility(self.tier({"secondary": 0.5, "tertiary": 0.5})),
                "outpatient",
                self.moment(first, self.alive_to),
                self.moment(first, self.alive_to),
                "内科",
                dx,
            )
            self._fill(enc, spec, shift=0.3 if controlled else 1.5)
            enc.end = enc.start + timedelta(minutes=20)
            enc.meds = self.meds(spec["drugs"], 30)
        if self.rng.random() < (0.05 if controlled else 0.12) * self.years_alive():
            self._admit(
                self.cat["complications"][disease],
                self.tier(self.params["utilisation"]["tier_share_inpatient"]),
                first,
            )

    def _fill(self, enc: Encounter, spec: dict[str, Any], shift: float) -> None:
        enc.labs = [measure(self.rng, self.ref, loinc, shift) for loinc in spec.get("labs") or []]
        enc.vitals = vitals(self.rng, self.ref, child=self.age(enc.start.date()) < 14)

    def _acute(self) -> None:
        util = self.params["utilisation"]
        band = _band(self.age(self.alive_from), _UTIL_BANDS)
        wband = 0 if band <= 1 else 1 if band <= 3 else 2
        acute = self.cat["acute"]
        keys = list(acute)
        weights = [acute[k]["weight"][wband] for k in keys]
        for kind in ("outpatient", "emergency"):
            for _ in range(poisson(self.rng, util[kind][band] * self.years_alive())):
                spec = acute[self.rng.choices(keys, weights=weights)[0]]
                tier = (
                    self.tier(util["tier_share_outpatient"])
                    if kind == "outpatient"
                    else self.tier({"secondary": 0.5, "tertiary": 0.5})
                )
                start = self.moment(
                    self.alive_from, self.alive_to, (8, 17) if kind == "outpatient" else (0, 23)
                )
                child = self.age(start.date()) < 14
                dept = (
                    "儿科"
                    if child and tier != "primary"
                    else ("急诊科" if kind == "emergency" else ("全科" if tier == "primary" else "内科"))
                )
                enc = self.encounter(
                    self.facility(tier),
                    kind,
                    start,
                    start + timedelta(minutes=self.rng.randint(10, 90)),
                    dept,
                    [(spec["code"], spec["name"])],
                )
                enc.labs = [
                    measure(self.rng, self.ref, loinc, 0.8 if self.rng.random() < 0.4 else 0.0)
                    for loinc in spec["labs"]
                ]
                enc.vitals = vitals(
                    self.rng,
                    self.ref,
                    fever=spec["code"].startswith(("J", "R50")) and self.rng.random() < 0.5,
                    child=child,
                )
                enc.meds = self.meds(spec["drugs"], self.rng.randint(3, 7))
                if tier != "primary" and self.rng.random() < util["imaging_share"][kind]:
                    self.imaging(enc, ["DX", "87.4401", "胸部X线检查", "CHEST"])

    def _inpatient(self) -> None:
        util = self.params["utilisation"]
        band = _band(self.age(self.alive_from), _UTIL_BANDS)
        wband = 0 if band <= 1 else 1 if band <= 3 else 2
        stays = self.cat["inpatient"]
        keys = list(stays)
        weights = [stays[k]["weight"][wband] for k in keys]
        for _ in range(poisson(self.rng, util["inpatient"][band] * self.years_alive())):
            spec = stays[self.rng.choices(keys, weights=weights)[0]]
            self._admit(spec, self.tier(util["tier_share_inpatient"]), self.alive_from)
        self._maternity()

    def _admit(
        self,
        spec: dict[str, Any],
        tier: str,
        earliest: date,
        start: datetime | None = None,
        los: int | None = None,
        kind: str = "inpatient",
    ) -> Encounter | None:
        cfg = self.params["inpatient"]
        if start is None:
            start = self.moment(max(earliest, self.alive_from), self.alive_to, (0, 23))
        if los is None:
            mu = math.log(cfg["los_mean"][tier]) - cfg["los_sigma"] ** 2 / 2
            los = max(1, round(self.rng.lognormvariate(mu, cfg["los_sigma"])))
        end = start + timedelta(days=los, hours=self.rng.randint(-4, 4))
        child = self.age(start.date()) < 14
        dept = (
            "妇产科"
            if kind == "delivery"
            else "儿科"
            if child and tier != "primary"
            else ("外科" if spec.get("procedure") else "内科")
        )
        enc = self.encounter(self.facility(tier), kind, start, end, dept, [(spec["code"], spec["name"])])
        if spec.get("procedure"):
            code, name = spec["procedure"]
            enc.procedures = [(str(code), str(name))]
        self._fill(enc, spec, shift=1.0)
        enc.meds = self.meds(spec.get("drugs") or [], los)
        if tier != "primary" and self.rng.random() < self.params["utilisation"]["imaging_share"]["inpatient"]:
            self.imaging(enc, spec.get("imaging"))
        if kind != "delivery" and self.rng.random() < cfg["mortality"] * (
            3 if self.age(start.date()) > 75 else 1
        ):
            enc.outcome = "died"
        return enc

    def _maternity(self) -> None:
        births = self.births
        cfg = self.params["maternity"]
        for child_birth, _child in births:
            born = date.fromordinal(child_birth)
            conception = born - timedelta(days=280)
            if born > self.alive_to or born < self.start:
                continue
            for k in range(self.params["maternity"]["antenatal_visits"]):
                day = conception + timedelta(days=84 + k * 40 + self.rng.randint(0, 10))
                if self.start <= day < born:
                    tier = "primary" if k % 2 == 0 else "secondary"
                    enc = self.encounter(
                        self.facility(tier),
                        "antenatal",
                        self.moment(day, day),
                        self.moment(day, day, (17, 17)),
                        "妇产科" if tier != "primary" else "预防保健科",
                        [
                            (
                                self.cat["maternity"]["antenatal"]["code"],
                                self.cat["maternity"]["antenatal"]["name"],
                            )
                        ],
                    )
                    enc.vitals = vitals(self.rng, self.ref)
                    if tier != "primary" and k == 2:
                        self.imaging(enc, self.cat["maternity"]["ultrasound"])
            mode = "caesarean" if self.rng.random() < cfg["caesarean_share"] else "vaginal"
            start = datetime(born.year, born.month, born.day, self.rng.randint(0, 23), self.rng.randrange(60))
            tier = "tertiary" if self.rng.random() < 0.5 else "secondary"
            self._admit(
                self.cat["maternity"][mode],
                tier,
                born,
                start - timedelta(hours=10),
                5 if mode == "caesarean" else 3,
                "delivery",
            )

    def _infections(self, plan: list[dict[str, Any]]) -> None:
        cfg = self.params["infectious"]
        for key, (code, per100k, peak, amp, group) in cfg["diseases"].items():
            age = self.age(self.alive_to)
            if (group == "child" and age >= 15) or (group == "adult" and age < 15):
                continue
            factor = 4.0 if group == "child" else 1.0
            for _ in range(poisson(self.rng, per100k / 1e5 * factor * self.years_alive())):
                self._case(key, code, self._seasonal_day(peak, amp), None)
        for ob in plan:
            if ob["district"] != self.r.district or self.rng.random() >= ob["p"]:
                continue
            group = cfg["diseases"][ob["disease"]][4]
            age = self.age(date.fromordinal(ob["first_day"]))
            if (group == "child" and age >= 15) or (group == "adult" and age < 15) or age < 0:
                continue
            day = date.fromordinal(self.rng.randint(ob["first_day"], ob["last_day"]))
            if self.alive_from <= day <= self.alive_to:
                self._case(ob["disease"], cfg["diseases"][ob["disease"]][0], day, ob["id"])

    def _seasonal_day(self, peak: int, amp: float) -> date:
        for _ in range(30):
            day = self.alive_from + timedelta(
                days=self.rng.randint(0, max(0, (self.alive_to - self.alive_from).days))
            )
            doy = day.timetuple().tm_yday
            if self.rng.random() * (1 + amp) < 1 + amp * math.cos(
                2 * math.pi * (doy - (peak - 0.5) * 30.4) / 365.25
            ):
                return day
        return day

    def _case(self, key: str, code: str, day: date, outbreak: int | None) -> None:
        tier = self.tier({"primary": 0.3, "secondary": 0.4, "tertiary": 0.3})
        child = self.age(day) < 14
        dept = (
            "儿科"
            if child and tier != "primary"
            else ("全科" if tier == "primary" else "感染科" if tier == "tertiary" else "内科")
        )
        start = self.moment(day, day)
        name = self.cat["infectious_code_names"][code]
        enc = self.encounter(
            self.facility(tier), "outpatient", start, start + timedelta(minutes=30), dept, [(code, name)]
        )
        enc.notifiable, enc.outbreak = key, outbreak
        enc.vitals = vitals(
            self.rng, self.ref, fever=key in ("influenza", "hfmd", "scarlet_fever", "mumps"), child=child
        )
        enc.labs = [measure(self.rng, self.ref, "6690-2", 0.6)] + (
            [measure(self.rng, self.ref, "5196-1", 1.0)] if key == "hepatitis_b" else []
        )
        enc.meds = self.meds(self.cat["infectious_drugs"].get(key, []), 5)

    def _vaccination(self) -> None:
        cov = self.params["immunization"]["coverage"]
        for row in self.ref.schedule:
            due = birthday_shift(self.r.birth, 0) + timedelta(days=int(float(row["age_months"]) * 30.44))
            if not (self.alive_from <= due <= self.alive_to) or self.rng.random() > cov:
                continue
            if (row["valid_to"] and due.isoformat() > row["valid_to"]) or due.isoformat()[:10] < row[
                "valid_from"
            ].ljust(10, "0")[:4]:
                continue
            if row["abbr"] == "HPV2" and self.r.sex != "female":
                continue
            if row["abbr"] in ("JE-I", "HepA-I") or (
                row["valid_from"] == "2021" and row["abbr"] == "DTaP" and due.year >= 2025
            ):
                continue
            day = due + timedelta(days=self.rng.randint(0, 20))
            if day > self.alive_to:
                continue
            enc = self.encounter(
                self.home_primary,
                "vaccination",
                self.moment(day, day),
                self.moment(day, day, (17, 17)),
                "预防保健科",
                [],
            )
            enc.vaccine = row


def maternal_child_card(mother_index: int, district: str) -> str:
    """Number of the 母子健康手册 of a mother (her babies' records carry the same number)."""
    return f"MC{district}{permute(mother_index, 109) % 10**8:08d}"


def cfg_extra(params: dict[str, Any]) -> float:
    """Extra hospital visits per chronic disease per year."""
    return float(params["utilisation"]["chronic_extra_outpatient"])
