"""Statistical shape of the generated region: age pyramid, IDs, prevalence, noise, outbreaks."""

from __future__ import annotations

import csv
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from rhip.fhir.identifiers import check_citizen_id
from rhip.synth import Manifest
from rhip.synth.population import build_skeleton
from rhip.synth.reference import load_params, load_reference
from rhip.synth.region import build_region

pytestmark = pytest.mark.xdist_group("synth")


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_age_pyramid_matches_census_broad_groups() -> None:
    params, ref = load_params(), load_reference()
    region = build_region(1, 30_000, params, ref)
    sk = build_skeleton(30_000, 1, date(2026, 6, 30), params, ref, region.districts)
    ages = (date(2026, 6, 30).toordinal() - sk.birth) / 365.25
    shares = [float(((ages >= lo) & (ages < hi)).mean()) for lo, hi in ((0, 15), (15, 60), (60, 200))]
    # 7th census 2020: 17.95% / 63.35% / 18.70%
    assert shares[0] == pytest.approx(0.18, abs=0.035)
    assert shares[1] == pytest.approx(0.634, abs=0.04)
    assert shares[2] == pytest.approx(0.187, abs=0.035)
    sexes = Counter(sk.sex.tolist())
    assert 0.47 < sexes[1] / len(sk) < 0.54


def test_citizen_ids_valid_and_unique_on_clean_records(synth_region: tuple[Path, Manifest]) -> None:
    out, _ = synth_region
    residents = _csv(out / "truth/residents.csv")
    assert len(residents) == 1200
    ids = [r["citizen_id"] for r in residents]
    assert len(set(ids)) == len(ids)
    for r in residents:
        check = check_citizen_id(
            r["citizen_id"], birth_date=date.fromisoformat(r["birth_date"]), sex=r["sex"]
        )
        assert check.valid, (r["resident_id"], check.problems)


def test_hypertension_prevalence_within_tolerance(synth_region: tuple[Path, Manifest]) -> None:
    out, _ = synth_region
    residents = {r["resident_id"]: r for r in _csv(out / "truth/residents.csv")}
    adults = {
        rid
        for rid, r in residents.items()
        if (date(2026, 6, 30) - date.fromisoformat(r["birth_date"])).days >= 18 * 365.25
    }
    hyp = {r["resident_id"] for r in _csv(out / "truth/chronic.csv") if r["disease"] == "hypertension"}
    prevalence = len(hyp & adults) / len(adults)
    assert prevalence == pytest.approx(0.275, abs=0.07)  # 27.5% of adults (NHC report 2020)
    assert hyp <= adults


def test_noise_rates_near_configured(synth_region: tuple[Path, Manifest]) -> None:
    out, _ = synth_region
    links = _csv(out / "truth/patient_links.csv")
    noise = Counter(k for link in links for k in link["noise"].split(";") if k)
    assert noise["missing-citizen-id"] / len(links) == pytest.approx(0.15, abs=0.04)
    assert noise["citizen-id-typo"] > 0
    assert noise["homophone-name"] > 0
    residents = {r["resident_id"] for r in _csv(out / "truth/residents.csv")}
    assert {link["resident_id"] for link in links} <= residents
    per_resident = Counter(link["resident_id"] for link in links)
    assert sum(1 for n in per_resident.values() if n >= 2) > len(per_resident) * 0.3


def test_outbreaks_visible_in_weekly_counts(synth_region: tuple[Path, Manifest]) -> None:
    out, _ = synth_region
    cases = _csv(out / "truth/notifiable_cases.csv")
    weekly: Counter[tuple[str, str, str]] = Counter()
    for c in cases:
        y, w, _ = date.fromisoformat(c["date"]).isocalendar()
        weekly[(c["disease"], c["district_code"], f"{y}-W{w:02d}")] += 1
    outbreaks = _csv(out / "truth/outbreaks.csv")
    assert len(outbreaks) == 12
    visible = 0
    for ob in outbreaks:
        first, last = date.fromisoformat(ob["first_day"]), date.fromisoformat(ob["last_day"])
        tagged = [c for c in cases if c["outbreak_id"] == ob["outbreak_id"]]
        assert len(tagged) == int(ob["extra_cases"])
        assert all(
            first <= date.fromisoformat(c["date"]) <= last and c["district_code"] == ob["district_code"]
            for c in tagged
        )
        n_weeks = (last - first).days // 7 + 1
        inside = sum(
            v
            for (d, dist, _), v in weekly.items()
            if d == ob["disease"] and dist == ob["district_code"] and ob["first_week"] <= _ <= ob["last_week"]
        )
        total = sum(
            v for (d, dist, _), v in weekly.items() if d == ob["disease"] and dist == ob["district_code"]
        )
        baseline = (total - inside) / max(1, 156 - n_weeks)
        if inside / n_weeks > 3 * baseline + 0.5:
            visible += 1
    assert visible >= len(outbreaks) * 0.6


def test_influenza_is_seasonal(synth_region: tuple[Path, Manifest]) -> None:
    out, _ = synth_region
    months = Counter(
        date.fromisoformat(c["date"]).month
        for c in _csv(out / "truth/notifiable_cases.csv")
        if c["disease"] == "influenza" and not c["outbreak_id"]
    )
    winter = months[12] + months[1] + months[2]
    summer = months[6] + months[7] + months[8]
    assert winter > 2 * summer


def test_babies_share_the_maternal_child_card_of_their_mother(synth_region: tuple[Path, Manifest]) -> None:
    out, _ = synth_region
    residents = {r["resident_id"]: r for r in _csv(out / "truth/residents.csv")}
    links = {
        (lk["facility_code"], lk["source_patient_id"]): lk["resident_id"]
        for lk in _csv(out / "truth/patient_links.csv")
    }
    holders: dict[str, set[str]] = {}
    for fac in _csv(out / "region/facilities.csv"):
        if fac["native_system"] != "csv":
            continue
        with (out / "csv" / fac["code"] / "person.csv").open(encoding=fac["encoding"], newline="") as fh:
            for row in csv.DictReader(fh):
                if row["母子健康手册号"]:
                    holders.setdefault(row["母子健康手册号"], set()).add(
                        links[(fac["code"], row["档案编号"])]
                    )
    pairs = [ids for ids in holders.values() if len(ids) >= 2]
    assert pairs
    for ids in pairs:
        babies = [i for i in ids if residents[i]["mother_id"] in ids]
        assert babies, ids


def test_older_residents_carry_retired_division_codes(synth_region: tuple[Path, Manifest]) -> None:
    out, _ = synth_region
    retired = {"330422": 1990, "330423": 1985, "330425": 1992}  # 平湖县, 海宁县, 桐乡县 (GB/T 2260 history)
    holders = [r for r in _csv(out / "truth/residents.csv") if r["citizen_id"][:6] in retired]
    assert len(holders) > 20
    assert all(int(r["birth_date"][:4]) <= retired[r["citizen_id"][:6]] for r in holders)
