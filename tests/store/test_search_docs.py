"""Docs as a contract: every indexed parameter and every supported modifier is documented."""

from __future__ import annotations

from pathlib import Path

from rhip.fhir.search_params import SUPPORTED_MODIFIERS, all_resource_types, search_params_for

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_indexed_parameter_is_listed() -> None:
    rows = {}
    for line in (DOCS / "search-parameters.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("| ") and " | `" in line:
            name, _, rest = line[2:].partition(" | ")
            rows.setdefault(name, rest)
    missing = [
        f"{rt}.{name}"
        for rt in all_resource_types()
        for name in search_params_for(rt)
        if f"`{name}`" not in rows.get(rt, "")
    ]
    assert not missing, f"regenerate docs/search-parameters.md; missing: {missing[:10]}"


def test_every_modifier_is_described() -> None:
    text = (DOCS / "search.md").read_text(encoding="utf-8")
    for kind, modifiers in SUPPORTED_MODIFIERS.items():
        for modifier in modifiers:
            shown = ":[type]" if modifier == "type" else f":{modifier}"
            assert shown in text, f"{kind} modifier {shown} missing from docs/search.md"
