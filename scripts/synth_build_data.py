"""Build the compact reference tables the synthetic region generator ships in src/rhip/synth/data/.

Run by developers when the shared reference data changes; the product never reads /work/shared.
Only sources whose licence allows shipping are used (see src/rhip/synth/data/ORIGIN.md).

    .venv/bin/python scripts/synth_build_data.py --reference ../shared/reference
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "rhip" / "synth" / "data"


def _gbk_ok(text: str) -> bool:
    try:
        text.encode("gbk")
    except UnicodeEncodeError:
        return False
    return True


def _name_chars() -> set[str]:
    chars: set[str] = set()
    with (OUT / "given_chars.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            chars.add(row["char"])
    with (OUT / "surnames.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            chars.update(row["surname"])
    return chars


def build_names(ref: Path) -> None:
    """Surname weights (top 400) and homophone / look-alike sets restricted to name characters."""
    with (ref / "names/surnames_zhwiki_top400.csv").open(encoding="utf-8-sig") as fh:
        rows = [r for r in csv.DictReader(fh) if _gbk_ok(r["surname"])]
    with (OUT / "surnames.csv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["surname", "percent"])
        for r in rows:
            w.writerow([r["surname"], r["percent_of_population"]])
    chars = _name_chars()
    homophones: dict[str, str] = {}
    for line in (ref / "names/confusable-chars/same_pinyin.txt").read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        parts = line.split("\t")
        if parts[0] in chars:
            same = "".join(c for c in "".join(parts[1:2]) if _gbk_ok(c) and c != parts[0])
            if same:
                homophones[parts[0]] = same[:12]
    lookalikes: dict[str, str] = {}
    for line in (ref / "names/confusable-chars/same_stroke.txt").read_text(encoding="utf-8").splitlines():
        group = [c for c in line.split("\t") if c.strip() and _gbk_ok(c)]
        for c in group:
            if c in chars:
                others = "".join(o for o in group if o != c)
                if others:
                    lookalikes[c] = (lookalikes.get(c, "") + others)[:12]
    with (OUT / "confusable_chars.csv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["char", "homophones", "lookalikes"])
        for c in sorted(chars):
            if c in homophones or c in lookalikes:
                w.writerow([c, homophones.get(c, ""), lookalikes.get(c, "")])


def build_divisions(ref: Path) -> None:
    """GB/T 2260 county-level codes in use at end-2024 (CC0) and NBS towns of the default city (MIT)."""
    with (ref / "admin-divisions/gbt2260_2024.csv").open(encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    with (OUT / "divisions.csv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["code", "name", "level", "prefecture_code", "province", "prefecture"])
        for r in rows:
            w.writerow(
                [r["code"], r["name"], r["level"], r["prefecture_code"], r["province"], r["prefecture"]]
            )
    with (ref / "admin-divisions/nbs2023_towns.csv").open(encoding="utf-8-sig") as fh:
        towns = [r for r in csv.DictReader(fh) if r["cityCode"] == "3304"]
    with (OUT / "towns.csv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["code", "name", "county_code"])
        for r in towns:
            w.writerow([r["code"], r["name"], r["areaCode"]])


def build_labs(ref: Path) -> None:
    """Lab tests and vital signs with LOINC, Chinese report names, UCUM units and adult intervals."""
    seen: set[str] = set()
    with (ref / "lab-loinc/common_lab_tests_cn.csv").open(encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    with (OUT / "lab_tests.csv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["loinc", "display", "name_zh", "abbr", "unit", "ref_low", "ref_high"])
        for r in rows:
            if r["loinc"] in seen or r["sex"] == "female":
                continue
            seen.add(r["loinc"])
            w.writerow(
                [
                    r["loinc"],
                    r["loinc_long_name"],
                    r["name_zh"],
                    r["abbr"],
                    r["ucum_unit"],
                    r["ref_low"],
                    r["ref_high"],
                ]
            )


def build_schedules(ref: Path) -> None:
    """Child immunisation schedule and the notifiable-disease list (facts)."""
    with (ref / "immunization/nip_child_schedule_cn.csv").open(encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    cols = ["vaccine_zh", "vaccine_en", "abbr", "route", "dose_no", "age_months", "valid_from", "valid_to"]
    with (OUT / "immunization_schedule.csv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(cols)
        for r in rows:
            w.writerow([r[c] for c in cols])
    with (ref / "infectious-disease/notifiable_diseases_cn.csv").open(encoding="utf-8-sig") as fh:
        rows = [r for r in csv.DictReader(fh) if not r["valid_to"]]
    with (OUT / "notifiable_diseases.csv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["class", "name_zh", "name_en", "icd10_who"])
        for r in rows:
            w.writerow([r["class"], r["name_zh"], r["name_en"], r["icd10_who"]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reference", type=Path, default=Path("../shared/reference"))
    args = parser.parse_args()
    build_names(args.reference)
    build_divisions(args.reference)
    build_labs(args.reference)
    build_schedules(args.reference)
    print(json.dumps(sorted(p.name for p in OUT.iterdir())))


if __name__ == "__main__":
    main()
