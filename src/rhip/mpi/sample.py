"""A small, seeded population of noisy source Patients with known truth, for tests and benchmarks.

The region generator (:mod:`rhip.synth`) is the reference for accuracy; this module exists so the
matcher can be exercised in seconds and at a million records without a full region. It produces
exactly the hard cases the MPI must handle: homophone characters (张伟/张威), one-digit citizen ID
typos, day/month swaps and digit typos in birth dates, missing IDs and phones, rewritten addresses,
and twins (same surname, birth date, address and phone, different given name and citizen ID).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from rhip.fhir import systems
from rhip.fhir.identifiers import make_citizen_id

_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡"
    "余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯"
    "龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
)
_SURNAME_WEIGHTS = tuple(max(0.2, 7.2 * 0.93**i) for i in range(len(_SURNAMES)))
_GIVEN = (
    "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红建文辉力鹏飞波斌宇浩凯健俊帆帅旭宁龙林欣佳"
    "雪琳晶颖倩婷慧梅琴云莉蓉燕玲丹萌婧瑶怡茜雯璐晨阳博文轩涵睿哲瑞昊然子豪梓宸一诺思源志国海东峰春"
    "威炜薇巍维蔚卫玮"
)
_DISTRICTS = (
    ("370102", "历下区"), ("370103", "市中区"), ("370104", "槐荫区"), ("370105", "天桥区"),
    ("370112", "历城区"), ("370113", "长清区"), ("370114", "章丘区"), ("370115", "济阳区"),
)  # fmt: skip
_ROADS = ("经十路", "泺源大街", "解放路", "和平路", "花园路", "山大路", "工业南路", "二环东路", "北园大街")
_FACILITIES = ("H001", "H002", "H003", "C101", "C102", "C103", "C104", "M201")


@dataclass(frozen=True)
class Noise:
    """Per-record error rates (defaults: a plausible mix of registration-desk errors)."""

    cid_missing: float = 0.3
    cid_typo: float = 0.03
    name_homophone: float = 0.05
    dob_swap: float = 0.02
    dob_typo: float = 0.02
    phone_missing: float = 0.3
    phone_changed: float = 0.1
    address_missing: float = 0.2
    address_rewritten: float = 0.2


@dataclass(frozen=True)
class Person:
    """One true resident."""

    key: str
    family: str
    given: str
    sex: str
    born: date
    cid: str
    phone: str
    district: tuple[str, str]
    road: str
    number: int


def _homophones() -> dict[str, list[str]]:
    from pypinyin import lazy_pinyin

    groups: dict[str, list[str]] = {}
    for char in dict.fromkeys(_GIVEN):
        groups.setdefault(lazy_pinyin(char)[0], []).append(char)
    return {c: [o for o in group if o != c] for group in groups.values() for c in group if len(group) > 1}


def _person(rng: random.Random, index: int, twin_of: Person | None = None) -> Person:
    sex = rng.choice(("male", "female"))
    given = "".join(rng.choice(_GIVEN) for _ in range(rng.choice((1, 2, 2))))
    if twin_of is not None:
        while given == twin_of.given:
            given = "".join(rng.choice(_GIVEN) for _ in range(len(twin_of.given)))
        return Person(
            f"R{index:08d}", twin_of.family, given, sex, twin_of.born,
            make_citizen_id(twin_of.district[0], twin_of.born, int(twin_of.cid[14:17]) + 2, sex),
            twin_of.phone, twin_of.district, twin_of.road, twin_of.number,
        )  # fmt: skip
    born = date(1935, 1, 1) + timedelta(days=rng.randrange(0, 365 * 88))
    district = rng.choice(_DISTRICTS)
    return Person(
        f"R{index:08d}", rng.choices(_SURNAMES, _SURNAME_WEIGHTS)[0], given, sex, born,
        make_citizen_id(district[0], born, rng.randrange(1, 999), sex),
        f"1{rng.choice('3578')}{rng.randrange(10**9):09d}", district,
        rng.choice(_ROADS), rng.randrange(1, 300),
    )  # fmt: skip


def _typo_digit(rng: random.Random, text: str, positions: range) -> str:
    pos = rng.choice(positions)
    digit = rng.choice([d for d in "0123456789" if d != text[pos]])
    return text[:pos] + digit + text[pos + 1 :]


def _record(
    rng: random.Random,
    person: Person,
    record_id: str,
    facility: str,
    noise: Noise,
    homo: dict[str, list[str]],
) -> dict[str, Any]:
    given = person.given
    if rng.random() < noise.name_homophone:
        options = [i for i, c in enumerate(given) if c in homo]
        if options:
            i = rng.choice(options)
            given = given[:i] + rng.choice(homo[given[i]]) + given[i + 1 :]
    dob = person.born.isoformat()
    if rng.random() < noise.dob_swap and person.born.day <= 12 and person.born.day != person.born.month:
        dob = f"{dob[:4]}-{dob[8:10]}-{dob[5:7]}"
    elif rng.random() < noise.dob_typo:
        for _ in range(10):
            candidate = _typo_digit(rng, dob, range(8, 10))
            try:
                date.fromisoformat(candidate)
                dob = candidate
                break
            except ValueError:
                continue
    identifiers = [
        {"system": systems.facility_card_system(facility), "value": f"{facility}{rng.randrange(10**8):08d}"}
    ]
    if rng.random() >= noise.cid_missing:
        cid = person.cid if rng.random() >= noise.cid_typo else _typo_digit(rng, person.cid, range(6, 17))
        identifiers.insert(0, {"system": systems.CITIZEN_ID, "value": cid})
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": record_id,
        "identifier": identifiers,
        "name": [
            {"use": "official", "family": person.family, "given": [given], "text": person.family + given}
        ],
        "gender": person.sex,
        "birthDate": dob,
    }
    if rng.random() >= noise.phone_missing:
        phone = person.phone if rng.random() >= noise.phone_changed else f"139{rng.randrange(10**8):08d}"
        patient["telecom"] = [{"system": "phone", "value": phone}]
    if rng.random() >= noise.address_missing:
        road = f"{person.road}{person.number}号"
        text = (
            f"济南市{person.district[1]}{road}"
            if rng.random() >= noise.address_rewritten
            else f"{person.district[1]}{road}院"
        )
        patient["address"] = [{"use": "home", "text": text, "district": person.district[1], "city": "济南市"}]
    return patient


def sample_population(
    residents: int,
    *,
    seed: int = 7,
    records_per_resident: float = 2.0,
    twin_rate: float = 0.01,
    noise: Noise | None = None,
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Noisy source Patients and the truth (record id -> true resident key).

    Each resident has 1 + Poisson(records_per_resident - 1) records at random facilities.
    """
    import numpy as np

    rng = random.Random(seed)
    counts = np.random.default_rng(seed).poisson(max(records_per_resident - 1.0, 0.0), residents) + 1
    noise = noise or Noise()
    homo = _homophones()
    patients: list[dict[str, Any]] = []
    truth: dict[str, str] = {}
    previous: Person | None = None
    used_cids: set[str] = set()
    for index in range(residents):
        twin = previous is not None and rng.random() < twin_rate
        person = _person(rng, index, previous if twin else None)
        for attempt in range(50):  # citizen IDs are unique in life, so here too
            if person.cid not in used_cids:
                break
            person = _person(rng, index, previous if twin and attempt < 3 else None)
        used_cids.add(person.cid)
        previous = person
        for n in range(int(counts[index])):
            facility = rng.choice(_FACILITIES)
            record_id = f"{facility.lower()}-{index:08d}-{n}"
            patients.append(_record(rng, person, record_id, facility, noise, homo))
            truth[record_id] = person.key
    rng.shuffle(patients)
    return patients, truth
