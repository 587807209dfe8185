"""The population skeleton: households, ages, sexes, family links and citizen-ID sequence numbers.

Everything that ties residents together (households, parents, twins, unique ID numbers) is decided
here in one cheap vectorised pass over the whole region, so the expensive per-resident detail can
then be generated independently, chunk by chunk, in any process, and still be deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

from rhip.synth.reference import Reference

HEAD, SPOUSE, CHILD, PARENT = 0, 1, 2, 3
MALE, FEMALE = 1, 2
_FIELDS = (
    "household",
    "role",
    "sex",
    "birth",
    "district",
    "id_region",
    "seq",
    "surname",
    "mother",
    "father",
    "spouse",
    "twin",
    "migrant",
)


@dataclass
class Skeleton:
    """Column arrays, one row per resident; ``birth`` is a proleptic ordinal (date.toordinal)."""

    household: np.ndarray
    role: np.ndarray
    sex: np.ndarray
    birth: np.ndarray
    district: np.ndarray
    id_region: np.ndarray
    seq: np.ndarray
    surname: np.ndarray
    mother: np.ndarray
    father: np.ndarray
    spouse: np.ndarray
    twin: np.ndarray
    migrant: np.ndarray

    def __len__(self) -> int:
        return int(self.household.shape[0])

    def slice(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """The rows ``start:stop`` of every column, as a picklable dict."""
        return {f: getattr(self, f)[start:stop] for f in _FIELDS}


class _AgeSampler:
    """Draws ages in years (float) from the 5-year pyramid, optionally restricted to a range."""

    def __init__(self, shares: list[float], rng: np.random.Generator) -> None:
        weights = np.asarray(shares, dtype=float)
        self._p = weights / weights.sum()
        self._rng = rng

    def draw(self, n: int, low: float = 0.0, high: float = 100.0) -> np.ndarray:
        lows = np.arange(len(self._p)) * 5.0
        highs = lows + 5.0
        highs[-1] = 100.0
        lo = np.clip(lows, low, high)
        hi = np.clip(highs, low, high)
        mass = self._p * np.where(hi > lo, (hi - lo) / (highs - lows), 0.0)
        mass = mass / mass.sum()
        group = self._rng.choice(len(mass), size=n, p=mass)
        return np.asarray(lo[group] + self._rng.random(n) * (hi[group] - lo[group]))


def _household_members(
    kind: str, rng: np.random.Generator, ages: _AgeSampler, params: dict[str, Any]
) -> list[tuple[int, float]]:
    """(role, age) of the members of one household; the first member is the head."""
    if kind == "single":
        return [(HEAD, float(ages.draw(1, 18, 100)[0]))]
    if kind == "couple":
        head = float(ages.draw(1, 45 if rng.random() < 0.6 else 22, 100)[0])
        return [(HEAD, head), (SPOUSE, float(np.clip(head + rng.normal(-1.5, 3.0), 20, 100)))]
    weights = np.asarray(params["households"]["children_weights"], dtype=float)
    n_children = 1 + int(rng.choice(len(weights), p=weights / weights.sum()))
    eldest = float(ages.draw(1, 0, 26)[0])
    children = [eldest] + [max(0.0, eldest - float(rng.uniform(1, 8))) for _ in range(n_children - 1)]
    head = eldest + float(rng.uniform(23, 36))
    members = [(HEAD, head), (SPOUSE, float(np.clip(head + rng.normal(-1.5, 2.5), 20, 100)))]
    members += [(CHILD, a) for a in children]
    if kind == "three_generation":
        grand = head + float(rng.uniform(23, 32))
        members.append((PARENT, min(grand, 99.5)))
        if rng.random() < 0.6:
            members.append((PARENT, min(grand + float(rng.normal(-1.5, 3)), 99.5)))
    return members


def _add_household(
    cols: dict[str, list[int]],
    rng: np.random.Generator,
    hh: int,
    kind: str,
    members: list[tuple[int, float]],
    place: tuple[int, int, int, int],
    sur_w: np.ndarray,
    params: dict[str, Any],
    end_ord: int,
) -> None:
    """Append one household's members: sexes, surnames, births, parents, spouses, twins.

    ``place`` is (district index, migrant flag, ID region of adults, local ID region).
    """
    district, migrant, origin, local = place
    twin_rate = float(params["households"]["twin_rate"])
    base = len(cols["role"])
    head_sex = MALE if rng.random() < 0.8 or (kind == "single" and rng.random() < 0.5) else FEMALE
    if kind == "single":
        head_sex = MALE if rng.random() < params["age_pyramid"]["male_share"] else FEMALE
    head_surname = int(rng.choice(len(sur_w), p=sur_w))
    father = mother = -1
    prev_child_birth = None
    for i, (role, age) in enumerate(members):
        if role == HEAD:
            sex, surname = head_sex, head_surname
        elif role == SPOUSE:
            sex, surname = 3 - head_sex, int(rng.choice(len(sur_w), p=sur_w))
        elif role == CHILD:
            sex = MALE if rng.random() < params["age_pyramid"]["male_share"] else FEMALE
            surname = head_surname if head_sex == MALE or rng.random() < 0.3 else cols["surname"][base + 1]
        else:
            sex = MALE if i == len(members) - 1 and rng.random() < 0.5 else FEMALE
            if i > 0 and members[i - 1][0] == PARENT:
                sex = 3 - cols["sex"][base + i - 1]
            surname = head_surname if sex == MALE else int(rng.choice(len(sur_w), p=sur_w))
        birth = end_ord - int(age * 365.25)
        twin = -1
        if role == CHILD and prev_child_birth is not None and rng.random() < twin_rate * 2:
            birth = prev_child_birth
            twin = base + i - 1
            cols["twin"][twin] = base + i
        if role == CHILD:
            prev_child_birth = birth
        if role in (HEAD, SPOUSE):
            if sex == MALE:
                father = base + i
            else:
                mother = base + i
        cols["household"].append(hh)
        cols["role"].append(role)
        cols["sex"].append(sex)
        cols["birth"].append(birth)
        cols["district"].append(district)
        cols["id_region"].append(origin if (migrant or role != CHILD) else local)
        cols["seq"].append(0)
        cols["surname"].append(surname)
        cols["mother"].append(mother if role == CHILD else -1)
        cols["father"].append(father if role == CHILD else -1)
        cols["spouse"].append(base + 1 - i if (role in (HEAD, SPOUSE) and kind != "single") else -1)
        cols["twin"].append(twin)
        cols["migrant"].append(migrant)


def build_skeleton(
    n: int, seed: int, end: date, params: dict[str, Any], ref: Reference, districts: list[str]
) -> Skeleton:
    """Build the households and family links of ``n`` residents, deterministically for ``seed``."""
    rng = np.random.default_rng([seed, 0x5EED])
    ages = _AgeSampler(params["age_pyramid"]["shares"], rng)
    kinds = params["households"]["kinds"]
    kind_names = list(kinds)
    kind_p = np.asarray([kinds[k] for k in kind_names], dtype=float)
    kind_p /= kind_p.sum()
    dist_w = np.asarray(params["city"]["district_weights"][: len(districts)], dtype=float)
    dist_w /= dist_w.sum()
    sur_w = np.asarray(ref.surname_weights, dtype=float)
    sur_w /= sur_w.sum()
    cols: dict[str, list[int]] = {f: [] for f in _FIELDS}
    end_ord = end.toordinal()
    migrant_share = float(params["households"]["migrant_household_share"])
    elsewhere = np.asarray([int(c) for c in ref.county_codes if not c.startswith(districts[0][:4])])
    hh = 0
    while len(cols["role"]) < n:
        kind = kind_names[int(rng.choice(len(kind_names), p=kind_p))]
        members = _household_members(kind, rng, ages, params)[: n - len(cols["role"])]
        district = int(rng.choice(len(districts), p=dist_w))
        migrant = int(rng.random() < migrant_share)
        origin = int(rng.choice(elsewhere)) if migrant else int(districts[district])
        _add_household(
            cols,
            rng,
            hh,
            kind,
            members,
            (district, migrant, origin, int(districts[district])),
            sur_w,
            params,
            end_ord,
        )
        hh += 1
    sk = Skeleton(**{f: np.asarray(v, dtype=np.int64) for f, v in cols.items()})
    # Older residents born elsewhere in the country keep the code of where the number was issued.
    older = (sk.migrant == 0) & (rng.random(len(sk)) < params["city"]["born_elsewhere_share"] * 0.5)
    sk.id_region[older] = rng.choice(elsewhere, size=int(older.sum()))
    _retired_codes(sk, rng, params)
    _assign_sequences(sk)
    return sk


def _retired_codes(sk: Skeleton, rng: np.random.Generator, params: dict[str, Any]) -> None:
    """Give residents born before a re-coding the retired division code their number was issued with."""
    share = float(params["city"].get("retired_code_share", 0.0))
    for current, (retired, last_year) in (params["city"].get("retired_codes") or {}).items():
        born_before = sk.birth < date(int(last_year) + 1, 1, 1).toordinal()
        mask = (sk.id_region == int(current)) & born_before & (rng.random(len(sk)) < share)
        sk.id_region[mask] = int(retired)


def _assign_sequences(sk: Skeleton) -> None:
    """Give every resident a GB 11643 sequence number unique within (region, birth date, sex)."""
    order = np.lexsort((np.arange(len(sk)), sk.sex, sk.birth, sk.id_region))
    key = np.stack([sk.id_region[order], sk.birth[order], sk.sex[order]], axis=1)
    new_group = np.ones(len(order), dtype=bool)
    new_group[1:] = np.any(key[1:] != key[:-1], axis=1)
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(len(order)), 0))
    rank = np.arange(len(order)) - group_start
    start = ((sk.id_region[order] * 31 + sk.birth[order] * 17) % 440) * 2
    seq = start + rank * 2 + (sk.sex[order] == MALE)
    sk.seq[order] = seq % 1000
