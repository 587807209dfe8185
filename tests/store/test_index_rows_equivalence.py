"""Index rows equal, resource by resource, those of the reference extractor over a broad corpus.

``index_rows_expected.json`` was computed by the extractor before it was compiled into per-type
closures (see :mod:`index_rows_corpus`); any difference in the rows of any resource fails here.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson
import pytest
from index_rows_corpus import EXPECTED, Resource, corpora, digests

EXPECTED_DIGESTS: dict[str, dict[str, Any]] = orjson.loads(EXPECTED.read_bytes())


@functools.cache
def _corpora() -> dict[str, list[Resource]]:
    """Built once per process, when a test first needs it (not while collecting)."""
    return corpora()


@pytest.mark.parametrize("name", sorted(EXPECTED_DIGESTS))
def test_index_rows_equal_the_reference_rows(name: str) -> None:
    resources = _corpora()[name]
    expected, got = EXPECTED_DIGESTS[name], digests(resources)
    assert got["bodies"] == expected["bodies"], (
        f"the {name} corpus changed: its expected digests no longer apply"
    )
    differing = [
        _label(r)
        for r, want, have in zip(resources, expected["rows"], got["rows"], strict=True)
        if want != have
    ]
    assert not differing, f"{len(differing)} of {len(resources)} resources give other rows: {differing[:10]}"


def test_corpus_reaches_every_parameter() -> None:
    """The corpus is broad: every parameter of every type finds rows of some resource in it."""
    from rhip.fhir.search_params import all_resource_types, search_params_for
    from rhip.store.index_extract import index_tuples, stored_params

    with_rows: set[tuple[str, str]] = set()
    for resources in _corpora().values():
        for resource in resources:
            try:
                rows = index_tuples(resource)
            except Exception:  # malformed shapes are part of the corpus
                continue
            with_rows.update((row[0], row[2]) for table_rows in rows.values() for row in table_rows)
    unreached = [
        f"{res_type}.{name}"
        for res_type in all_resource_types()
        for name in sorted(search_params_for(res_type))
        if not any((res_type, param) in with_rows for param, _target in stored_params(res_type, name))
    ]
    assert unreached == []


def _label(resource: Resource) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id')}"
