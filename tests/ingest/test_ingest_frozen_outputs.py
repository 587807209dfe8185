"""Ingest's outputs over a broad corpus equal the frozen ones (tests/ingest/ingest_frozen_corpus.py).

The frozen digests were made by the implementation before the per-resource speed work on
validation, canonicalisation and quality rules; any change of a stored body, a quarantine reason
or element path, an issue, a rule outcome, a Provenance or a tally shows here, with the records
it touched.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from ingest_frozen_corpus import FROZEN, frozen_outputs


@pytest.fixture(scope="module")
def found(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    return frozen_outputs(tmp_path_factory.mktemp("frozen"))


@pytest.fixture(scope="module")
def frozen() -> dict[str, object]:
    return orjson.loads(FROZEN.read_bytes())  # type: ignore[no-any-return]


@pytest.mark.parametrize("section", ["synth", "examples", "bad"])
def test_every_record_gives_the_frozen_outputs(
    section: str, found: dict[str, dict[str, list[str]]], frozen: dict[str, dict[str, list[str]]]
) -> None:
    new, old = found["sections"][section], frozen["sections"][section]
    assert len(new) == len(old), "the corpus itself changed"
    changed = [i for i, (a, b) in enumerate(zip(new, old, strict=True)) if a != b]
    assert not changed, f"{len(changed)} records of {section} differ, first at {changed[:10]}"


def test_quality_tallies_are_the_frozen_ones(found: dict[str, object], frozen: dict[str, object]) -> None:
    assert found["tallies"] == frozen["tallies"]


def test_the_frozen_file_tells_records_apart(frozen: dict[str, Any]) -> None:
    """Digests that repeat (nothing mapped, everything failing alike) or no failed rule would prove little.

    Bad inputs repeat on purpose (the same mutation of two resources gives the same quarantine).
    """
    for section, share in (("synth", 1.0), ("examples", 1.0), ("bad", 0.4)):
        digests = frozen["sections"][section]
        assert len(digests) > 1000 and len(set(digests)) >= share * len(digests), section
    assert sum(1 for row in frozen["tallies"] if row[4] > 0) > 50  # rules that failed somewhere
    assert FROZEN.stat().st_size < 2_000_000
