"""The fast paths of the search-value normaliser give exactly the per-character definition.

``normalize`` lower-cases ASCII directly, strips combining marks with one regular expression and
caches short strings; whatever the path, the result must equal NFKD, drop every code point with a
non-zero combining class, casefold, NFC, truncate (the definition the query side relies on).
"""

from __future__ import annotations

import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from rhip.store.search_values import MAX_INDEXED_CHARS, normalize


def _by_definition(text: str) -> str:
    if text.isascii():
        return text.lower()[:MAX_INDEXED_CHARS]
    folded = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in folded if not unicodedata.combining(ch))
    return unicodedata.normalize("NFC", stripped.casefold())[:MAX_INDEXED_CHARS]


@settings(max_examples=400, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=120))
def test_normalize_equals_the_definition(text: str) -> None:
    assert normalize(text) == _by_definition(text)
    assert normalize(text) == _by_definition(text)  # second call: served from the cache when short


def test_known_foldings() -> None:
    assert normalize("Müller") == "muller"
    assert normalize("ＺＨＡＮＧ 张三") == "zhang 张三"
    assert normalize("Ångström") == "angstrom"
    assert normalize("Straße") == "strasse"
    assert normalize("e\u0301" * 300) == "e" * 300  # long text: not cached, marks removed
    assert len(normalize("é" * 1000)) == MAX_INDEXED_CHARS


def test_marks_beyond_the_basic_plane_are_removed() -> None:
    """The BMP and astral mark classes are applied separately; both must strip."""
    assert normalize("Ab\U0001d165c\u0301心") == "abc心"
    assert normalize("x\U0001d167" * 100) == "x" * 100  # long (uncached) path
