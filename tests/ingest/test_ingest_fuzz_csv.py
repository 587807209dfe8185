"""Fuzz: mutated CSV extracts (community-centre mapping) go through the real pipeline; nothing is lost."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
from fuzzing import ENCODINGS, assert_batch_sound, fuzz_settings, mutated_bytes, odd_text, shown_on_failure
from hypothesis import given
from hypothesis import strategies as st

from rhip.ingest.runner import ingest_file

Table = tuple[str, list[list[str]]]  # file name, header + rows


@pytest.fixture(scope="module")
def csv_seeds(generated_region: Path) -> list[Table]:
    """Header and first rows of every table the generator writes for a community centre."""
    seeds: list[Table] = []
    for path in sorted((generated_region / "csv").glob("*/*.csv")):
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = raw.decode("gb18030")  # some centres write GBK
        rows = list(csv.reader(io.StringIO(text)))
        if len(rows) > 1 and all(name != path.name for name, _rows in seeds):
            seeds.append((path.name, rows[:4]))
    return seeds


@st.composite
def mutated_table(draw: st.DrawFn, rows: list[list[str]]) -> list[list[str]]:
    """Rows after 1-3 cell/column mutations: odd values, deleted/duplicated/swapped cells and columns."""
    rows = [list(r) for r in rows]
    for _ in range(draw(st.integers(1, 3))):
        r = draw(st.integers(0, len(rows) - 1))
        width = max(len(rows[r]), 1)
        c = draw(st.integers(0, width - 1))
        ops = ["value", "value", "value", "header", "del-cell", "dup-cell", "del-col", "swap-col"]
        op = draw(st.sampled_from(ops))
        if op == "value" and rows[r]:
            rows[max(r, 1) if len(rows) > 1 else r][c] = draw(odd_text)
        elif op == "header" and c < len(rows[0]):
            rows[0][c] = draw(odd_text)
        elif op == "del-cell" and rows[r]:
            del rows[r][c]
        elif op == "dup-cell" and rows[r]:
            rows[r].insert(c, rows[r][c])
        elif op == "del-col":
            for row in rows:
                if c < len(row):
                    del row[c]
        elif op == "swap-col":
            d = draw(st.integers(0, width - 1))
            for row in rows:
                if c < len(row) and d < len(row):
                    row[c], row[d] = row[d], row[c]
    return rows


def _text(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue()


@fuzz_settings(default=30)
@given(data=st.data())
def test_mutated_csv_rows_are_stored_or_quarantined(
    data: st.DataObject, csv_seeds: list[Table], store_factory: Any, tmp_path: Path
) -> None:
    """Odd cell values, missing/extra/swapped columns, wrong encodings and byte damage."""
    name, rows = data.draw(st.sampled_from(csv_seeds))
    text = _text(data.draw(mutated_table(rows)))
    raw = text.encode(data.draw(st.sampled_from(ENCODINGS)), "replace")
    if data.draw(st.booleans()):
        raw = data.draw(mutated_bytes(raw))
    with shown_on_failure(table=name, raw=raw), store_factory.pipeline() as pipeline:
        folder = tmp_path / f"example-{store_factory.count}"
        folder.mkdir()
        path = folder / name
        path.write_bytes(raw)
        report = ingest_file(pipeline, path, "330402C01")
        assert_batch_sound(pipeline, report)
