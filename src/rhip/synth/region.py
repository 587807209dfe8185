"""The region: districts (GB/T 2260 county-level units), facilities by tier, departments, staff.

Facility counts grow slowly with the population so that a small test region still has every tier
and every native system, and a million-resident region has a realistic number of centres.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from rhip.synth.model import Facility, Practitioner
from rhip.synth.names import draw_name
from rhip.synth.reference import Reference

_TERTIARY_NAMES = (
    "第一医院",
    "第二医院",
    "中医医院",
    "妇幼保健院",
    "第三医院",
    "中心医院",
    "肿瘤医院",
    "康复医院",
)


@dataclass
class Region:
    """The city, its districts and facilities; ``by_tier`` indexes facilities per district."""

    city_code: str
    city_name: str
    province: str
    districts: list[str]
    district_names: dict[str, str]
    facilities: list[Facility]

    def facility(self, code: str) -> Facility:
        for f in self.facilities:
            if f.code == code:
                return f
        raise KeyError(code)

    def tier(self, tier: str, district: str | None = None) -> list[Facility]:
        return [f for f in self.facilities if f.tier == tier and (district is None or f.district == district)]


def _staff(fac: Facility, rng: random.Random, ref: Reference, per_dept: int) -> None:
    n = 0
    for dept in fac.departments:
        for k in range(per_dept):
            sex = "male" if rng.random() < 0.45 else "female"
            surname, given = draw_name(rng, ref, sex)
            role = "nurse" if k == per_dept - 1 and per_dept > 2 else "doctor"
            licence = f"1{fac.district}{rng.randrange(10**8):08d}"
            n += 1
            fac.practitioners.append(
                Practitioner(f"{fac.code}-P{n:04d}", surname + given, sex, licence, dept, role)
            )


def build_region(seed: int, residents: int, params: dict[str, Any], ref: Reference) -> Region:
    """Lay out the city's facilities for a population of ``residents``; deterministic for ``seed``."""
    rng = random.Random(f"{seed}:region")
    city = str(params["city"]["prefecture_code"])
    prefix = city[:4]
    districts = [c for c in ref.county_codes if c.startswith(prefix)]
    if not districts:
        raise ValueError(f"params city.prefecture_code {city}: no county-level divisions found")
    row = ref.divisions[city]
    cfg = params["facilities"]
    facilities: list[Facility] = []
    city_short = row["name"].removesuffix("市")

    def add(code: str, name: str, tier: str, district: str, native: str, encoding: str = "utf-8") -> Facility:
        lo, hi = cfg["beds"].get(tier, [0, 0])
        fac = Facility(
            code,
            name,
            tier,
            district,
            native,
            encoding,
            rng.randint(lo, hi) if hi else 0,
            list(cfg["departments"].get(tier, [])),
            salt=len(facilities) + 1,
        )
        facilities.append(fac)
        _staff(fac, rng, ref, int(cfg["practitioners_per_department"].get(tier, 0)))
        return fac

    for i in range(int(cfg["tertiary"])):
        add(
            f"{districts[i % len(districts)]}T{i + 1:02d}",
            city_short + "市" + _TERTIARY_NAMES[i % len(_TERTIARY_NAMES)],
            "tertiary",
            districts[i % len(districts)],
            "fhir",
        )
    extra_primary = residents // int(cfg["primary_per_residents"]) // len(districts)
    for d in districts:
        dname = ref.divisions[d]["name"]
        for k in range(int(cfg["secondary_per_district"])):
            native = "hl7v2" if rng.random() < float(cfg["hl7_share"]) else "fhir"
            add(
                f"{d}S{k + 1:02d}",
                f"{dname}{'人民医院' if k == 0 else '第二人民医院'}",
                "secondary",
                d,
                native,
            )
        towns = list(ref.towns.get(d, ())) or [f"{dname}第{n}街道" for n in range(1, 9)]
        for k in range(int(cfg["primary_per_district"]) + extra_primary):
            town = towns[k % len(towns)]
            kind = "社区卫生服务中心" if town.endswith("街道") else "卫生院"
            name = town.removesuffix("街道").removesuffix("镇").removesuffix("乡") + kind
            enc = "gbk" if rng.random() < float(cfg["csv_gbk_share"]) else "utf-8"
            add(f"{d}C{k + 1:02d}", name, "primary", d, "csv", enc)
    add(f"{city}D01", f"{city_short}市疾病预防控制中心", "cdc", districts[0], "none")
    names = {d: ref.divisions[d]["name"] for d in districts}
    return Region(city, row["name"], row["province"], districts, names, facilities)
