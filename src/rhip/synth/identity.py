"""True residents and the dirty source records facilities keep of them.

A resident's details come from their own seeded random stream (and household details from the
household's stream), so any chunk of residents can be built alone. Facility records copy those
details through a noise model: missing or mistyped ID numbers, confusable name characters,
swapped day/month, stale phones and addresses, and occasional duplicate records.
"""

from __future__ import annotations

import random
from datetime import date, timedelta
from typing import Any

from rhip.fhir import systems
from rhip.fhir.identifiers import check_digit
from rhip.synth.model import Facility, Resident, SourcePatient
from rhip.synth.names import draw_name, noisy_name
from rhip.synth.population import CHILD, HEAD, MALE, PARENT, SPOUSE
from rhip.synth.reference import Reference
from rhip.synth.region import Region

_ROLES = {HEAD: "head", SPOUSE: "spouse", CHILD: "child", PARENT: "parent"}
_ROADS = [
    "人民路",
    "中山路",
    "解放路",
    "建设路",
    "南湖路",
    "文昌路",
    "环城路",
    "长水路",
    "禾兴路",
    "秀洲大道",
    "紫阳街",
    "勤俭路",
    "少年路",
    "广益路",
    "由拳路",
    "双园路",
]
_PHONE_PREFIX = (
    "133",
    "135",
    "136",
    "137",
    "138",
    "139",
    "150",
    "151",
    "155",
    "158",
    "159",
    "177",
    "180",
    "186",
    "188",
    "189",
    "199",
)
_MOD = 10**10


def permute(i: int, salt: int) -> int:
    """A bijection of 0..10^10-1 (odd multiplier not divisible by 5), different for each salt."""
    return (i * (2654435761 + 10 * salt) + 7919 * salt) % _MOD


def _phone(rng: random.Random) -> str:
    return rng.choice(_PHONE_PREFIX) + f"{rng.randrange(10**8):08d}"


def _address(rng: random.Random, region: Region, ref: Reference, district: str) -> str:
    towns = ref.towns.get(district) or (region.district_names[district],)
    return (
        f"{region.province}{region.city_name}{region.district_names[district]}{rng.choice(towns)}"
        f"{rng.choice(_ROADS)}{rng.randint(1, 999)}号"
        f"{rng.randint(1, 30)}幢{rng.randint(1, 6)}0{rng.randint(1, 4)}室"
    )


def make_resident(
    index: int,
    row: dict[str, int],
    seed: int,
    region: Region,
    ref: Reference,
    params: dict[str, Any],
    window: tuple[date, date],
    rng: random.Random,
) -> Resident:
    """Build resident ``index`` from its skeleton ``row`` and its own random stream ``rng``."""
    hh_rng = random.Random(f"{seed}:hh:{row['household']}")
    district = region.districts[row["district"]]
    address = _address(hh_rng, region, ref, district)
    years = (window[1] - window[0]).days / 365.25
    old_address = None
    if hh_rng.random() < 1 - (1 - params["contacts"]["move_per_year"]) ** years:
        old_address = _address(hh_rng, region, ref, region.districts[hh_rng.randrange(len(region.districts))])
    sex = "male" if row["sex"] == MALE else "female"
    surname = ref.surnames[row["surname"]]
    if row["twin"] >= 0:
        t_rng = random.Random(f"{seed}:twin:{min(index, row['twin'])}")
        first = t_rng.choice(ref.given_male if sex == "male" else ref.given_female)
        given = first + rng.choice(ref.given_male if sex == "male" else ref.given_female)
    else:
        surname, given = draw_name(rng, ref, sex, surname)
    birth = date.fromordinal(int(row["birth"]))
    first17 = f"{row['id_region']:06d}{birth:%Y%m%d}{row['seq']:03d}"
    age_end = (window[1] - birth).days / 365.25
    phone = _phone(rng)
    old_phone = (
        _phone(rng) if rng.random() < 1 - (1 - params["contacts"]["phone_change_per_year"]) ** years else None
    )
    if age_end < 14:
        phone, old_phone = _phone(hh_rng), None  # children: a parent's number
    donor = (
        age_end >= 18
        and age_end < 60
        and rng.random() < params["immunization"]["blood_donation_per_year"] * years
    )
    return Resident(
        index=index,
        resident_id=f"R{index + 1:08d}",
        citizen_id=first17 + check_digit(first17),
        surname=surname,
        given=given,
        sex=sex,
        birth=birth,
        district=district,
        household=f"HH{row['household'] + 1:07d}",
        role=_ROLES[row["role"]],
        address=address,
        old_address=old_address,
        phone=phone,
        old_phone=old_phone,
        health_card=f"{region.city_code}{permute(index, 101):010d}",
        social_security=(
            f"{chr(65 + permute(index, 7) % 26)}{permute(index, 103) % 10**8:08d}"
            if rng.random() < 0.95
            else None
        ),
        immunization_card=(f"{district}{permute(index, 105) % 10**8:08d}" if age_end < 8 else None),
        maternal_child_card=None,
        blood_donation=(f"{region.city_code[:2]}{permute(index, 107):010d}" if donor else None),
        death=None,
        mother=int(row["mother"]),
        father=int(row["father"]),
        spouse=int(row["spouse"]),
        twin=int(row["twin"]),
    )


def _typo(rng: random.Random, cid: str) -> str:
    pos = rng.randrange(6, 17)
    if rng.random() < 0.5 and pos < 16 and cid[pos] != cid[pos + 1]:
        return cid[:pos] + cid[pos + 1] + cid[pos] + cid[pos + 2 :]
    digit = str((int(cid[pos]) + rng.randint(1, 9)) % 10)
    return cid[:pos] + digit + cid[pos + 1 :]


class SourceBook:
    """The facility records of one resident, created on first contact with each facility."""

    def __init__(
        self, resident: Resident, rng: random.Random, ref: Reference, params: dict[str, Any]
    ) -> None:
        self.resident = resident
        self.rng = rng
        self.ref = ref
        self.dirty = params["dirty"]
        self.records: dict[str, SourcePatient] = {}
        self.duplicates: dict[str, SourcePatient] = {}
        self.order: list[SourcePatient] = []

    def record(self, facility: Facility, when: date) -> SourcePatient:
        """The record ``facility`` uses for this resident (a duplicate one, occasionally)."""
        rec = self.records.get(facility.code)
        if rec is None:
            rec = self._new(facility, 0)
            self.records[facility.code] = rec
            if facility.native != "csv" and self.rng.random() < self.dirty["duplicate_record"]:
                dup = self._new(facility, 1)
                dup.merged_into = rec.source_id
                dup.noise.append("duplicate-record")
                self.duplicates[facility.code] = dup
        twin = self.duplicates.get(facility.code)
        if twin is not None and self.rng.random() < 0.3:
            return twin
        return rec

    def _new(self, facility: Facility, variant: int) -> SourcePatient:
        r, rng, d = self.resident, self.rng, self.dirty
        noise: list[str] = []
        name = r.name
        for kind in ("homophone", "lookalike", "traditional"):
            if rng.random() < d[f"{kind}_name"]:
                alt = noisy_name(rng, self.ref, name, kind)
                if alt is not None:
                    name = alt
                    noise.append(f"{kind}-name")
        birth = r.birth
        if rng.random() < d["day_month_swap"] and r.birth.day <= 12 and r.birth.day != r.birth.month:
            birth = r.birth.replace(month=r.birth.day, day=r.birth.month)
            noise.append("day-month-swap")
        cid: str | None = r.citizen_id
        if rng.random() < d["missing_citizen_id"]:
            cid = None
            noise.append("missing-citizen-id")
        elif rng.random() < d["citizen_id_typo"]:
            cid = _typo(rng, r.citizen_id)
            noise.append("citizen-id-typo")
        phone: str | None = r.phone
        if r.old_phone and rng.random() < d["old_phone"]:
            phone = r.old_phone
            noise.append("old-phone")
        if rng.random() < d["missing_phone"]:
            phone = None
            noise.append("missing-phone")
        address = r.address
        if r.old_address and rng.random() < d["old_address"]:
            address = r.old_address
            noise.append("old-address")
        salt = facility.salt * 2 + variant
        source_id = f"{permute(r.index, 1000 + salt):010d}"
        ids: list[tuple[str, str, str]] = [
            (systems.facility_card_system(facility.code, "mrn"), source_id, "MR"),
            (
                systems.facility_card_system(facility.code, "visit-card"),
                f"V{permute(r.index, 3000 + salt):010d}",
                "VC",
            ),
        ]
        if cid:
            ids.append((systems.CITIZEN_ID, cid, "NNCHN"))
        if rng.random() < 0.7:
            ids.append((systems.HEALTH_CARD, r.health_card, "HC"))
        if r.social_security and rng.random() < 0.8:
            ids.append((systems.SOCIAL_SECURITY_CARD, r.social_security, "SS"))
        if r.immunization_card and facility.tier == "primary":
            ids.append((systems.IMMUNIZATION_CARD, r.immunization_card, "IC"))
        if r.maternal_child_card:
            ids.append((systems.MATERNAL_CHILD_CARD, r.maternal_child_card, "MC"))
        if r.blood_donation and rng.random() < 0.5:
            ids.append((systems.BLOOD_DONATION_CERT, r.blood_donation, "BD"))
        rec = SourcePatient(facility, source_id, r, name, r.sex, birth, cid, phone, address, ids, noise)
        self.order.append(rec)
        return rec


def birthday_shift(born: date, years: int) -> date:
    """``born`` + ``years`` (29 February becomes 28 February in common years)."""
    try:
        return born.replace(year=born.year + years)
    except ValueError:
        return born.replace(year=born.year + years, day=28)


def days(n: float) -> timedelta:
    """A timedelta of ``n`` days."""
    return timedelta(days=n)
