"""SQL dialects for the ViewDefinition compiler: the few places where DuckDB and Spark SQL differ.

The compiler represents every FHIRPath collection as an SQL list of text values (objects and arrays
as JSON text, primitives as their raw text), so that both engines share one set of semantics and
only the spelling of list, JSON and lambda functions changes. Each method returns SQL text built
from other SQL fragments; values never appear here (the compiler binds them as parameters).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

__all__ = ["Dialect", "DuckDBDialect", "SparkDialect", "get_dialect"]

#: SQL types for SQL-on-FHIR column types, per dialect.
_INTEGER_TYPES = {"integer", "positiveInt", "unsignedInt", "integer64"}


class Dialect(ABC):
    """How one SQL engine spells the list/JSON operations the compiler needs."""

    name: ClassVar[str]
    #: True when a dotted JSON path stops at arrays (so a fast path can be tried first).
    strict_json_path: ClassVar[bool] = False

    def param(self, key: str) -> str:
        """A named parameter placeholder."""
        return f"${key}"

    @abstractmethod
    def get(self, obj: str, name: str) -> str:
        """Raw text of member ``name`` of JSON object text ``obj`` (NULL when absent)."""

    def get_json(self, obj: str, name: str) -> str:
        """Member ``name`` of ``obj`` in the form :meth:`norm` takes (raw text by default)."""
        return self.get(obj, name)

    def get_json_path(self, obj: str, names: list[str]) -> str:
        """The value at a dotted member path, for :meth:`norm` (only when ``strict_json_path``)."""
        raise NotImplementedError

    def json_text(self, value: str) -> str:
        """Raw text of a JSON value taken with :meth:`get_json`."""
        return value

    def extract_members_sql(self, column: str, names: list[str]) -> str:
        """One expression extracting several top-level members in a single parse (or '' if unsupported)."""
        return ""

    @abstractmethod
    def norm(self, value: str) -> str:
        """Turn a member value into a collection: NULL -> [], JSON array -> its items, else [v]."""

    @abstractmethod
    def index0(self, index_var: str) -> str:
        """The 0-based position from the index variable of an indexed ``transform``."""

    @abstractmethod
    def transform(self, lst: str, var: str, body: str, index: str | None = None) -> str:
        """Map a lambda over a list."""

    @abstractmethod
    def filter(self, lst: str, var: str, body: str) -> str:
        """Keep the items for which the lambda is true."""

    @abstractmethod
    def flatten(self, lst: str) -> str:
        """Concatenate a list of lists."""

    @abstractmethod
    def concat(self, left: str, right: str) -> str:
        """Concatenate two lists."""

    @abstractmethod
    def length(self, lst: str) -> str:
        """Number of items."""

    @abstractmethod
    def item(self, lst: str, index0: str) -> str:
        """Item at a 0-based position, NULL when out of range."""

    @abstractmethod
    def last(self, lst: str) -> str:
        """Last item, NULL when empty."""

    @abstractmethod
    def empty_list(self) -> str:
        """An empty list of text."""

    def single(self, value: str) -> str:
        """[value] or [] when value is NULL."""
        return f"CASE WHEN ({value}) IS NULL THEN {self.empty_list()} ELSE [{value}] END"

    def array(self, items: list[str]) -> str:
        """A list literal of SQL expressions."""
        return "[" + ", ".join(items) + "]"

    @abstractmethod
    def distinct(self, lst: str) -> str:
        """List without duplicates."""

    @abstractmethod
    def contains(self, lst: str, value: str) -> str:
        """Whether the list contains the value."""

    @abstractmethod
    def join(self, lst: str, sep: str) -> str:
        """Items joined by a separator."""

    @abstractmethod
    def to_double(self, raw: str) -> str:
        """Text to a floating number, NULL when not numeric."""

    @abstractmethod
    def to_bigint(self, raw: str) -> str:
        """Text to an integer, NULL when not an integer."""

    @abstractmethod
    def to_text(self, value: str) -> str:
        """Any scalar to text (booleans as true/false)."""

    @abstractmethod
    def regex_match(self, value: str, pattern: str) -> str:
        """Whether the text matches a regular expression (pattern is SQL)."""

    @abstractmethod
    def regex_extract(self, value: str, pattern: str, group: int) -> str:
        """Group of the first match of a regular expression, '' or NULL when none."""

    @abstractmethod
    def raise_error(self, message_sql: str) -> str:
        """An expression that fails the query with a message."""

    @abstractmethod
    def struct(self, fields: list[tuple[str, str]]) -> str:
        """A row value with named fields."""

    @abstractmethod
    def null_struct(self, fields: list[tuple[str, str]]) -> str:
        """A row value whose fields are all NULL, with the given SQL types."""

    def field(self, struct: str, name: str) -> str:
        """A field of a row value."""
        return f'{struct}."{name}"'

    @abstractmethod
    def explode_select(self, rows: str, alias: str) -> str:
        """FROM-clause fragment turning a list of rows into one row each, named ``alias``."""

    @abstractmethod
    def sql_type(self, fhir_type: str) -> str:
        """SQL type of a column of the given FHIR type."""

    @abstractmethod
    def cast_list(self, lst: str, fhir_type: str) -> str:
        """Cast every item of a text list to the column's SQL type."""

    def cast(self, raw: str, fhir_type: str) -> str:
        """Cast raw text to the column's SQL type."""
        if fhir_type == "boolean":
            return f"(CASE {raw} WHEN 'true' THEN TRUE WHEN 'false' THEN FALSE END)"
        if fhir_type in _INTEGER_TYPES:
            return self.to_bigint(raw)
        if fhir_type == "decimal":
            return self.to_double(raw)
        return raw

    @abstractmethod
    def substr(self, value: str, start1: int, length: int) -> str:
        """Substring (1-based start)."""

    @abstractmethod
    def last_day(self, year_month: str) -> str:
        """Last day-of-month (two digits) of a 'YYYY-MM' text."""


class DuckDBDialect(Dialect):
    """DuckDB: JSON functions over text, lists and Python-style lambdas."""

    name = "duckdb"
    strict_json_path = True

    def get(self, obj: str, name: str) -> str:
        return f"json_extract_string({obj}, '$.\"{name}\"')"

    def get_json(self, obj: str, name: str) -> str:
        return f"json_extract({obj}, '$.\"{name}\"')"

    def get_json_path(self, obj: str, names: list[str]) -> str:
        path = "".join(f'."{n}"' for n in names)
        return f"json_extract({obj}, '${path}')"

    def json_text(self, value: str) -> str:
        return f"json_extract_string({value}, '$')"

    def extract_members_sql(self, column: str, names: list[str]) -> str:
        paths = ", ".join(f"'$.\"{n}\"'" for n in names)
        return f"json_extract({column}, [{paths}])"

    def norm(self, value: str) -> str:
        return (
            f"(CASE WHEN ({value}) IS NULL THEN []::VARCHAR[] "
            f"WHEN json_type({value}) = 'ARRAY' THEN json_extract_string({value}, '$[*]') "
            f"WHEN json_type({value}) = 'NULL' THEN []::VARCHAR[] "
            f"ELSE [json_extract_string({value}, '$')] END)"
        )

    def index0(self, index_var: str) -> str:
        return f"({index_var} - 1)"  # DuckDB's lambda index is 1-based

    def transform(self, lst: str, var: str, body: str, index: str | None = None) -> str:
        if index is None:
            return f"list_transform({lst}, lambda {var}: {body})"
        return f"list_transform({lst}, lambda {var}, {index}: {body})"

    def filter(self, lst: str, var: str, body: str) -> str:
        return f"list_filter({lst}, lambda {var}: coalesce({body}, FALSE))"

    def flatten(self, lst: str) -> str:
        return f"flatten({lst})"

    def concat(self, left: str, right: str) -> str:
        return f"list_concat({left}, {right})"

    def length(self, lst: str) -> str:
        return f"len({lst})"

    def item(self, lst: str, index0: str) -> str:
        return f"({lst})[({index0}) + 1]"

    def last(self, lst: str) -> str:
        return f"({lst})[-1]"

    def empty_list(self) -> str:
        return "[]::VARCHAR[]"

    def distinct(self, lst: str) -> str:
        return f"list_distinct({lst})"

    def contains(self, lst: str, value: str) -> str:
        return f"list_contains({lst}, {value})"

    def join(self, lst: str, sep: str) -> str:
        return f"array_to_string({lst}, {sep})"

    def to_double(self, raw: str) -> str:
        return f"TRY_CAST({raw} AS DOUBLE)"

    def to_bigint(self, raw: str) -> str:
        return f"TRY_CAST({raw} AS BIGINT)"

    def to_text(self, value: str) -> str:
        return f"CAST({value} AS VARCHAR)"

    def regex_match(self, value: str, pattern: str) -> str:
        return f"regexp_full_match({value}, {pattern})"

    def regex_extract(self, value: str, pattern: str, group: int) -> str:
        return f"regexp_extract({value}, {pattern}, {group})"

    def raise_error(self, message_sql: str) -> str:
        return f"error({message_sql})"

    def struct(self, fields: list[tuple[str, str]]) -> str:
        inner = ", ".join(f"'{name}': {expr}" for name, expr in fields)
        return "{" + inner + "}"

    def null_struct(self, fields: list[tuple[str, str]]) -> str:
        return self.struct([(name, f"CAST(NULL AS {typ})") for name, typ in fields])

    def explode_select(self, rows: str, alias: str) -> str:
        return f"(SELECT unnest({rows}) AS {alias})"

    def sql_type(self, fhir_type: str) -> str:
        if fhir_type == "boolean":
            return "BOOLEAN"
        if fhir_type in _INTEGER_TYPES:
            return "BIGINT"
        if fhir_type == "decimal":
            return "DOUBLE"
        return "VARCHAR"

    def cast_list(self, lst: str, fhir_type: str) -> str:
        return f"list_transform({lst}, lambda v_: {self.cast('v_', fhir_type)})"

    def substr(self, value: str, start1: int, length: int) -> str:
        return f"substr({value}, {start1}, {length})"

    def last_day(self, year_month: str) -> str:
        return f"strftime(last_day(CAST(({year_month}) || '-01' AS DATE)), '%d')"


class SparkDialect(Dialect):
    """Spark SQL: ``get_json_object``/``from_json`` and higher-order array functions."""

    name = "spark"

    def param(self, key: str) -> str:
        return f":{key}"

    def get(self, obj: str, name: str) -> str:
        return f"get_json_object({obj}, '$.{name}')"

    def norm(self, raw: str) -> str:
        return (
            f"(CASE WHEN ({raw}) IS NULL THEN {self.empty_list()} "
            f"WHEN startswith(({raw}), '[') "
            f"THEN filter(from_json(({raw}), 'array<string>'), x_ -> x_ IS NOT NULL) "
            f"ELSE array({raw}) END)"
        )

    def index0(self, index_var: str) -> str:
        return index_var

    def transform(self, lst: str, var: str, body: str, index: str | None = None) -> str:
        if index is None:
            return f"transform({lst}, {var} -> {body})"
        return f"transform({lst}, ({var}, {index}) -> {body})"

    def filter(self, lst: str, var: str, body: str) -> str:
        return f"filter({lst}, {var} -> coalesce({body}, FALSE))"

    def flatten(self, lst: str) -> str:
        return f"flatten({lst})"

    def concat(self, left: str, right: str) -> str:
        return f"concat({left}, {right})"

    def length(self, lst: str) -> str:
        return f"size({lst})"

    def item(self, lst: str, index0: str) -> str:
        return f"try_element_at({lst}, CAST(({index0}) + 1 AS INT))"

    def last(self, lst: str) -> str:
        return f"try_element_at({lst}, -1)"

    def empty_list(self) -> str:
        return "CAST(array() AS array<string>)"

    def single(self, value: str) -> str:
        return f"CASE WHEN ({value}) IS NULL THEN {self.empty_list()} ELSE array({value}) END"

    def array(self, items: list[str]) -> str:
        return "array(" + ", ".join(items) + ")"

    def distinct(self, lst: str) -> str:
        return f"array_distinct({lst})"

    def contains(self, lst: str, value: str) -> str:
        return f"array_contains({lst}, {value})"

    def join(self, lst: str, sep: str) -> str:
        return f"array_join({lst}, {sep})"

    def to_double(self, raw: str) -> str:
        return f"try_cast({raw} AS DOUBLE)"

    def to_bigint(self, raw: str) -> str:
        return f"try_cast({raw} AS BIGINT)"

    def to_text(self, value: str) -> str:
        return f"CAST({value} AS STRING)"

    def regex_match(self, value: str, pattern: str) -> str:
        return f"regexp_like({value}, concat('^(', {pattern}, ')$'))"

    def regex_extract(self, value: str, pattern: str, group: int) -> str:
        return f"regexp_extract({value}, {pattern}, {group})"

    def raise_error(self, message_sql: str) -> str:
        return f"raise_error({message_sql})"

    def struct(self, fields: list[tuple[str, str]]) -> str:
        return "named_struct(" + ", ".join(f"'{name}', {expr}" for name, expr in fields) + ")"

    def null_struct(self, fields: list[tuple[str, str]]) -> str:
        return self.struct([(name, f"CAST(NULL AS {typ})") for name, typ in fields])

    def field(self, struct: str, name: str) -> str:
        return f"{struct}.`{name}`"

    def explode_select(self, rows: str, alias: str) -> str:
        return f"LATERAL VIEW explode({rows}) x_rows AS {alias}"

    def sql_type(self, fhir_type: str) -> str:
        if fhir_type == "boolean":
            return "BOOLEAN"
        if fhir_type in _INTEGER_TYPES:
            return "BIGINT"
        if fhir_type == "decimal":
            return "DOUBLE"
        return "STRING"

    def cast_list(self, lst: str, fhir_type: str) -> str:
        return f"transform({lst}, v_ -> {self.cast('v_', fhir_type)})"

    def substr(self, value: str, start1: int, length: int) -> str:
        return f"substr({value}, {start1}, {length})"

    def last_day(self, year_month: str) -> str:
        return f"date_format(last_day(to_date(concat({year_month}, '-01'))), 'dd')"


def get_dialect(name: str) -> Dialect:
    """The dialect called ``name`` ('duckdb' or 'spark')."""
    if name == "duckdb":
        return DuckDBDialect()
    if name == "spark":
        return SparkDialect()
    raise ValueError(f"unknown SQL dialect {name!r}")
