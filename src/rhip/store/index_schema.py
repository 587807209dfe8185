"""Search index tables and the pure function that derives their rows from a resource.

One table per search-parameter type; every row names the resource (``res_type``, ``res_id``) and
the parameter (``param``) and holds the value in the form the query side compares: strings both
exact and normalised, tokens as system/code (+ normalised display text for ``:text``), dates and
numbers as ``[low, high)`` ranges, references as target type/id (+ URL and identifier). Rows are
derived from the current body only, by :func:`index_rows`, which walks the precompiled paths of
:mod:`rhip.fhir.search_params` (no FHIRPath engine), because ingest calls it for every resource.
"""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, String, Table

from rhip.store.index_extract import index_rows
from rhip.store.schema import METADATA

__all__ = [
    "INDEX_TABLES",
    "idx_composite",
    "idx_date",
    "idx_number",
    "idx_quantity",
    "idx_reference",
    "idx_string",
    "idx_token",
    "idx_uri",
    "index_rows",
    "table_for_type",
]

#: Text compared byte-wise (code point order) on PostgreSQL too, so prefix ranges are exact.
_Text = String().with_variant(String(collation="C"), "postgresql")


def _key_columns() -> list[Column]:
    return [
        Column("res_type", String(64), nullable=False),
        Column("res_id", String(64), nullable=False),
        Column("param", String(100), nullable=False),
    ]


idx_string = Table(
    "idx_string",
    METADATA,
    *_key_columns(),
    Column("norm", _Text, nullable=False),  # lower-case, accents stripped, width-folded
    Column("exact", _Text, nullable=False),
    Index("ix_idx_string_value", "res_type", "param", "norm", "res_id"),
    Index("ix_idx_string_res", "res_type", "res_id", "param"),
)

idx_token = Table(
    "idx_token",
    METADATA,
    *_key_columns(),
    Column("system", _Text),
    Column("code", _Text),
    Column("text", _Text),  # normalised display/text, for :text
    Index("ix_idx_token_value", "res_type", "param", "code", "system", "res_id"),
    Index("ix_idx_token_res", "res_type", "res_id", "param"),
)

idx_date = Table(
    "idx_date",
    METADATA,
    *_key_columns(),
    Column("low", Float, nullable=False),  # epoch seconds, inclusive
    Column("high", Float, nullable=False),  # epoch seconds, exclusive
    Index("ix_idx_date_value", "res_type", "param", "low", "high"),
    Index("ix_idx_date_res", "res_type", "res_id", "param"),
)

idx_reference = Table(
    "idx_reference",
    METADATA,
    *_key_columns(),
    Column("target_type", String(64)),
    Column("target_id", String(64)),
    Column("url", _Text),  # absolute URL, canonical or urn as written (version stripped)
    Column("ident_system", _Text),  # Reference.identifier, for :identifier
    Column("ident_value", _Text),
    Index("ix_idx_reference_value", "res_type", "param", "target_id", "target_type", "res_id"),
    Index("ix_idx_reference_target", "target_type", "target_id"),
    Index("ix_idx_reference_res", "res_type", "res_id", "param"),
)

idx_quantity = Table(
    "idx_quantity",
    METADATA,
    *_key_columns(),
    Column("low", Float, nullable=False),
    Column("high", Float, nullable=False),
    Column("system", _Text),
    Column("code", _Text),
    Column("unit", _Text),
    Index("ix_idx_quantity_value", "res_type", "param", "code", "low"),
    Index("ix_idx_quantity_res", "res_type", "res_id", "param"),
)

idx_number = Table(
    "idx_number",
    METADATA,
    *_key_columns(),
    Column("low", Float, nullable=False),
    Column("high", Float, nullable=False),
    Index("ix_idx_number_value", "res_type", "param", "low"),
    Index("ix_idx_number_res", "res_type", "res_id", "param"),
)

idx_uri = Table(
    "idx_uri",
    METADATA,
    *_key_columns(),
    Column("uri", _Text, nullable=False),
    Index("ix_idx_uri_value", "res_type", "param", "uri"),
    Index("ix_idx_uri_res", "res_type", "res_id", "param"),
)

#: Two-component composites whose first component is a token (e.g. Observation code-value-quantity).
idx_composite = Table(
    "idx_composite",
    METADATA,
    *_key_columns(),
    Column("system1", _Text),
    Column("code1", _Text),
    Column("system2", _Text),  # token / quantity system
    Column("code2", _Text),  # token code / quantity code
    Column("low2", Float),  # quantity or date range
    Column("high2", Float),
    Column("text2", _Text),  # normalised string / unit
    Index("ix_idx_composite_value", "res_type", "param", "code1", "code2"),
    Index("ix_idx_composite_res", "res_type", "res_id", "param"),
)

#: Every index table; each has ``res_type``, ``res_id`` and ``param``.
INDEX_TABLES: list[Table] = [
    idx_string,
    idx_token,
    idx_date,
    idx_reference,
    idx_quantity,
    idx_number,
    idx_uri,
    idx_composite,
]

_BY_TYPE = {
    "string": idx_string,
    "token": idx_token,
    "date": idx_date,
    "reference": idx_reference,
    "quantity": idx_quantity,
    "number": idx_number,
    "uri": idx_uri,
    "composite": idx_composite,
}


def table_for_type(param_type: str) -> Table:
    """The index table holding values of a search-parameter type."""
    return _BY_TYPE[param_type]
