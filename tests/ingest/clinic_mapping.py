"""A small CSV mapping (one ``person.csv`` table to Patient) shared by the quarantine tests."""

from __future__ import annotations

CLINIC_MAPPING = """name: clinic
encoding: utf-8
tables:
  person.csv:
    resources:
      - type: Patient
        id_from: [pid]
        fields:
          name[0].text: {column: name}
          gender: {column: sex, map: {"1": male, "2": female}}
"""


def clinic_mapping(encoding: str = "utf-8") -> str:
    """The mapping, declaring ``encoding`` for its CSV files."""
    return CLINIC_MAPPING.replace("encoding: utf-8", f"encoding: {encoding}", 1)
