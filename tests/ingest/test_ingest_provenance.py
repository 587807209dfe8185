"""Provenance helpers: ``meta.source`` is the percent-encoded facility/connector/position."""

from __future__ import annotations

import uuid
from urllib.parse import quote

from hypothesis import given, settings
from hypothesis import strategies as st

from rhip.ingest.model import SourceInfo
from rhip.ingest.provenance import _NAMESPACE, source_uri, stable_id

_PARTS = st.text(
    st.characters(blacklist_categories=("Cs",)) | st.sampled_from("/:#=.-_~ %?&+中é"), max_size=12
)


@settings(max_examples=500, deadline=None)
@given(_PARTS, _PARTS, _PARTS)
def test_source_uri_is_the_quoted_location(facility: str, connector: str, position: str) -> None:
    """The plain-ASCII shortcut gives what ``quote`` gives, for any text (the facility as the
    batch keeps it: control characters replaced, at most 64 characters)."""
    source = SourceInfo(facility, connector)
    expected = "urn:rhip:ingest:" + quote(f"{source.facility}/{connector}/{position}", safe="/:#=.-_")
    assert source_uri(source, position) == expected


def test_source_uri_of_a_file_line_and_of_text_to_encode() -> None:
    assert (
        source_uri(SourceInfo("F1", "fhir-ndjson"), "a.ndjson:12")
        == "urn:rhip:ingest:F1/fhir-ndjson/a.ndjson:12"
    )
    assert source_uri(SourceInfo("院", "csv"), "a b?c") == "urn:rhip:ingest:%E9%99%A2/csv/a%20b%3Fc"


@settings(max_examples=2000, deadline=None)
@given(st.lists(_PARTS, max_size=4))
def test_stable_id_is_the_uuid5_of_the_parts(parts: list[str]) -> None:
    assert stable_id(*parts) == uuid.uuid5(_NAMESPACE, "\x1f".join(parts)).hex
