"""Copy the shippable reference code lists into src/rhip/fhir/data/terminology/.

Run by developers when the reference folder changes; the product never reads ../shared. Only the
files whose licences allow shipping are copied (see /work/shared/reference/README.md): the
OpenDRG-derived Chinese ICD-10 and ICD-9-CM-3 lists (Apache-2.0; government standards), the
notifiable-disease list (facts) and the common lab tests with LOINC codes (LOINC licence, notice in
ORIGIN.md). The GPL-3 GNU Health tables and the non-commercial ATC file are deliberately not copied.

Usage: ``.venv/bin/python scripts/gen_fhir_terminology.py [--source ../shared/reference]``
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
_DEFAULT_SOURCE = _ROOT.parent / "shared" / "reference"
_OUT = _ROOT / "src" / "rhip" / "fhir" / "data" / "terminology"
#: (source file under the reference folder, packaged name, columns that must be present)
_FILES = (
    ("icd/icd10_cn_clinical2_insurance2_diagnoses.csv", "icd10_cn_diagnoses.csv", ("code", "name_zh")),
    ("icd/icd9cm3_cn_clinical3_insurance2_procedures.csv", "icd9cm3_cn_procedures.csv", ("code", "name_zh")),
    ("infectious-disease/notifiable_diseases_cn.csv", "notifiable_diseases_cn.csv", ("class", "icd10_who")),
    ("lab-loinc/common_lab_tests_cn.csv", "lab_tests_cn.csv", ("loinc", "name_zh", "ucum_unit")),
)


def main() -> None:
    """Copy the files unchanged after checking their headers."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--source", type=Path, default=_DEFAULT_SOURCE)
    args = parser.parse_args()
    _OUT.mkdir(parents=True, exist_ok=True)
    for source_name, target_name, columns in _FILES:
        source = args.source / source_name
        with source.open(encoding="utf-8", newline="") as handle:
            header = next(csv.reader(handle))
        missing = [c for c in columns if c not in header]
        if missing:
            raise SystemExit(f"{source}: columns {missing} missing")
        shutil.copyfile(source, _OUT / target_name)
        print(f"copied {source_name} -> {target_name}")


if __name__ == "__main__":
    main()
