"""Placing cases in districts: one GB/T 2260 district code per resident, names for display.

Source records disagree on where a person lives: some carry a district code, some only address
text, some nothing (HL7 v2 and CSV feeds often have no address), and a facility may keep an
address from before a move. The identity layer links all records of a resident, so the district is
decided per resident by a vote over all of their records (a code counts directly, a known district
name found in the address text counts as its code; the golden record breaks ties). Only a resident
with no usable address at all falls back to the district of the treating facility.

District names and codes come from the lake's Organization resources (address district and the
six-digit area code that starts the facility's registration number), so no region-specific table
is needed.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["UNKNOWN_AREA", "DistrictDirectory", "district_directory", "resident_districts"]

log = logging.getLogger(__name__)

UNKNOWN_AREA = "unknown"
_CODE = re.compile(r"^\d{6}$")
_GOLDEN_WEIGHT = 1.5


@dataclass
class DistrictDirectory:
    """District codes and names of a region, and the district of each facility."""

    names: dict[str, str] = field(default_factory=dict)  # code -> name
    facilities: dict[str, str] = field(default_factory=dict)  # organization id -> code

    def code_of(self, value: str | None) -> str | None:
        """A six-digit code as given, or the code of a known district name; None otherwise."""
        if not value:
            return None
        value = value.strip()
        if _CODE.match(value):
            return value
        return self._by_name().get(value)

    def find_in_text(self, text: str | None) -> str | None:
        """The code of the (longest) known district name that occurs in an address text."""
        if not text:
            return None
        for name, code in self._by_name().items():
            if name in text:
                return code
        return None

    def label(self, code: str) -> str:
        """``code name`` for tables (the code alone when the name is unknown)."""
        name = self.names.get(code)
        return f"{code} {name}" if name else code

    def _by_name(self) -> dict[str, str]:
        ordered = sorted(self.names.items(), key=lambda kv: len(kv[1]), reverse=True)
        return {name: code for code, name in ordered if name}


def _facility_code(org_id: str, identifier: str | None) -> str | None:
    for value in (identifier, org_id):
        if value and len(value) >= 6 and value[:6].isdigit():
            return value[:6]
    return None


def district_directory(lake_dir: Path) -> DistrictDirectory:
    """District codes/names and facility districts from the lake's Organization resources."""
    from rhip.lake import DuckDBEngine

    view = json.loads(
        (resources.files("rhip.surveillance") / "data" / "organization_district.json").read_text("utf-8")
    )
    engine = DuckDBEngine()
    try:
        engine.attach_lake(Path(lake_dir))
        rows = engine.run_view(view).rows
    finally:
        engine.close()
    directory = DistrictDirectory()
    votes: dict[str, Counter[str]] = {}
    for r in rows:
        code = _facility_code(str(r["id"]), r.get("identifier"))
        name = r.get("district")
        if code is None:
            continue
        directory.facilities[str(r["id"])] = code
        if name:
            votes.setdefault(code, Counter())[str(name)] += 1
    directory.names = {code: c.most_common(1)[0][0] for code, c in votes.items()}
    return directory


def resident_districts(con: Any, directory: DistrictDirectory) -> dict[str, str]:
    """Resident id (MPI golden id, else the patient id) -> district code, by vote over their records."""
    try:
        rows = con.execute(
            "SELECT coalesce(resident_id, patient_id), district, address, coalesce(is_golden, false) "
            "FROM patient_demographics"
        ).fetchall()
    except Exception as exc:  # a lake without the identity view: nobody is placed by address
        log.warning("patient_demographics view unreadable (%s); districts from facilities only", exc)
        return {}
    votes: dict[str, dict[str, float]] = {}
    for resident, district, address, golden in rows:
        code = directory.code_of(district) or directory.find_in_text(address)
        if code is not None:
            box = votes.setdefault(str(resident), {})
            box[code] = box.get(code, 0.0) + (_GOLDEN_WEIGHT if golden else 1.0)
    return {resident: max(sorted(box), key=lambda k: box[k]) for resident, box in votes.items()}
