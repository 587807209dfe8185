"""Query engines that run compiled views: DuckDB embedded (default) and Spark (optional extra).

Both engines see the same thing: per resource type, a relation with a text column ``resource``
(the FHIR JSON) and ``id``, either loaded from Python objects or read from the Parquet lake. The
abstract base keeps the orchestration (compile, run, shape the result) in one ``@final`` method so
engines differ only in how they register data and execute SQL.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, final

import orjson

from rhip.errors import InvalidRequest
from rhip.lake.compiler import CompiledView, compile_view

__all__ = ["DuckDBEngine", "Engine", "SparkEngine", "ViewResult", "make_spark_session"]

log = logging.getLogger(__name__)
_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")


@dataclass
class ViewResult:
    """Rows of a view as dictionaries, with the column names in order."""

    columns: list[str]
    rows: list[dict[str, Any]]


def _relation_name(resource_type: str) -> str:
    if not _TYPE.match(resource_type):
        raise InvalidRequest(f"not a resource type name: {resource_type!r}")
    return f"fhir_{resource_type.lower()}"


class Engine(ABC):
    """An SQL engine over FHIR resources grouped by type."""

    dialect: str

    @abstractmethod
    def load_resources(self, resources: Iterable[dict[str, Any]]) -> None:
        """Replace the registered data with these resources (grouped by resourceType)."""

    @abstractmethod
    def attach_lake(self, lake_dir: Path) -> list[str]:
        """Register every resource type found in a Parquet lake; return the types."""

    @abstractmethod
    def has_type(self, resource_type: str) -> bool:
        """Whether a relation is registered for the type."""

    @abstractmethod
    def execute(self, sql: str, params: dict[str, object]) -> list[tuple[Any, ...]]:
        """Run SQL with bound parameters and return all rows."""

    @final
    def compile(self, view: dict[str, Any]) -> CompiledView:
        """Compile a ViewDefinition for this engine against its registered relation."""
        rtype = view.get("resource") if isinstance(view, dict) else None
        known = self.has_type(rtype) if isinstance(rtype, str) else False
        structure = self.typed_structure(rtype) if known and isinstance(rtype, str) else None
        compiled = compile_view(view, self.dialect, source="__SOURCE__", typed_structure=structure)
        relation = (
            _relation_name(compiled.resource) if self.has_type(compiled.resource) else self.empty_source()
        )
        compiled.sql = compiled.sql.replace("__SOURCE__", relation)
        return compiled

    @final
    def run_view(self, view: dict[str, Any]) -> ViewResult:
        """Compile and run a view; rows come back as dictionaries keyed by column name."""
        compiled = self.compile(view)
        rows = self.execute(compiled.sql, compiled.params)
        names = compiled.column_names
        return ViewResult(names, [dict(zip(names, row, strict=True)) for row in rows])

    def typed_structure(self, resource_type: str) -> dict[str, Any] | None:
        """Structure of the registered relation's ``typed`` column, or None (JSON text only)."""
        return None

    @abstractmethod
    def empty_source(self) -> str:
        """A relation with a ``resource`` column and no rows."""


class DuckDBEngine(Engine):
    """DuckDB in-process; the default engine for the lake, the CLI and the applications."""

    dialect = "duckdb"

    def __init__(self, database: str = ":memory:", *, threads: int | None = None) -> None:
        import duckdb

        self.con = duckdb.connect(database)
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        self._types: set[str] = set()
        self._tables: set[str] = set()
        self._structures: dict[str, dict[str, Any]] = {}

    def load_resources(self, resources: Iterable[dict[str, Any]]) -> None:
        import pyarrow as pa

        from rhip.lake.typed_copy import TYPED_COLUMN, infer_structure, structure_sql_text

        groups: dict[str, list[tuple[str, str]]] = {}
        for res in resources:
            rtype = str(res.get("resourceType", ""))
            groups.setdefault(rtype, []).append((str(res.get("id", "")), orjson.dumps(res).decode()))
        for rtype in list(self._types):
            kind = "TABLE" if rtype in self._tables else "VIEW"
            self.con.execute(f"DROP {kind} IF EXISTS {_relation_name(rtype)}")
        self._types.clear()
        self._tables.clear()
        self._structures.clear()
        for rtype, rows in groups.items():
            name = _relation_name(rtype)
            table = pa.table({"id": [r[0] for r in rows], "resource": [r[1] for r in rows]})
            self.con.register(f"{name}_arrow", table)
            structure = infer_structure(self.con, f"{name}_arrow", rtype) if _TYPE.match(rtype) else {}
            typed = f", json_transform(resource, {structure_sql_text(structure)}) AS {TYPED_COLUMN}"
            self.con.execute(f"CREATE TABLE {name} AS SELECT *{typed if structure else ''} FROM {name}_arrow")
            self.con.unregister(f"{name}_arrow")
            if structure:
                self._structures[rtype] = structure
            self._types.add(rtype)
            self._tables.add(rtype)

    def attach_lake(self, lake_dir: Path) -> list[str]:
        from rhip.lake.export import current_sql, lake_types, typed_structure

        found = []
        for rtype in lake_types(lake_dir):
            name = _relation_name(rtype)
            if rtype in self._tables:
                self.con.execute(f"DROP TABLE IF EXISTS {name}")
                self._tables.discard(rtype)
            self.con.execute(f"CREATE OR REPLACE VIEW {name} AS {current_sql(lake_dir, rtype)}")
            structure = typed_structure(lake_dir, rtype)
            if structure:
                self._structures[rtype] = structure
            else:
                self._structures.pop(rtype, None)
            self._types.add(rtype)
            found.append(rtype)
        return found

    def has_type(self, resource_type: str) -> bool:
        return resource_type in self._types

    def typed_structure(self, resource_type: str) -> dict[str, Any] | None:
        return self._structures.get(resource_type)

    def empty_source(self) -> str:
        return "(SELECT CAST(NULL AS VARCHAR) AS id, CAST(NULL AS VARCHAR) AS resource WHERE FALSE)"

    def execute(self, sql: str, params: dict[str, object]) -> list[tuple[Any, ...]]:
        return self.con.execute(sql, params or None).fetchall()

    def close(self) -> None:
        """Close the DuckDB connection."""
        self.con.close()


def make_spark_session(
    app_name: str = "rhip-lake",
    master: str = "local[1]",
    log_level: str = "ERROR",
    *,
    progress: bool = True,
    jars: Sequence[str] = (),
) -> Any:
    """A small local Spark session (UI off, few shuffle partitions), created lazily.

    ``jars`` adds UDF jars (e.g. Splink's similarity functions) so that one session per process can
    serve the lake and the identity layer: Spark gives every later builder the first session.
    """
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master(master).appName(app_name)
    if jars:
        builder = builder.config("spark.jars", ",".join(jars))
    session = (
        builder.config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.driver.memory", "1g")
        .config("spark.sql.ansi.enabled", "false")
        .config("spark.ui.showConsoleProgress", "true" if progress else "false")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel(log_level)
    return session


class SparkEngine(Engine):
    """Spark SQL over the same relations; pyspark is imported only when this engine is built."""

    dialect = "spark"

    def __init__(self, session: Any | None = None) -> None:
        self.spark = session or make_spark_session()
        self._types: set[str] = set()

    def load_resources(self, resources: Iterable[dict[str, Any]]) -> None:
        groups: dict[str, list[tuple[str, str]]] = {}
        for res in resources:
            rtype = str(res.get("resourceType", ""))
            groups.setdefault(rtype, []).append((str(res.get("id", "")), orjson.dumps(res).decode()))
        for rtype in list(self._types):
            self.spark.catalog.dropTempView(_relation_name(rtype))
        self._types.clear()
        for rtype, rows in groups.items():
            df = self.spark.createDataFrame(rows, "id string, resource string")
            df.createOrReplaceTempView(_relation_name(rtype))
            self._types.add(rtype)

    def attach_lake(self, lake_dir: Path) -> list[str]:
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        from rhip.lake.export import lake_types, read_state

        found = []
        state = read_state(lake_dir)["types"]
        for rtype in lake_types(lake_dir):
            st = state[rtype]
            base = self.spark.read.parquet(str(lake_dir / rtype / "layer=base" / f"batch={st['base_batch']}"))
            df = base.select("id", "resource")
            if st.get("delta_batches"):
                paths = [str(lake_dir / rtype / "layer=delta" / f"batch={b}") for b in st["delta_batches"]]
                delta = self.spark.read.option("basePath", str(lake_dir / rtype / "layer=delta")).parquet(
                    *paths
                )
                newest = delta.withColumn(
                    "rn_",
                    F.row_number().over(
                        Window.partitionBy("id").orderBy(F.desc("last_updated"), F.desc("batch"))
                    ),
                ).where("rn_ = 1")
                kept = base.join(delta.select("id").distinct(), on="id", how="left_anti").select(
                    "id", "resource"
                )
                df = kept.unionByName(newest.where("NOT deleted").select("id", "resource"))
            df.createOrReplaceTempView(_relation_name(rtype))
            self._types.add(rtype)
            found.append(rtype)
        return found

    def has_type(self, resource_type: str) -> bool:
        return resource_type in self._types

    def empty_source(self) -> str:
        return "(SELECT CAST(NULL AS STRING) AS id, CAST(NULL AS STRING) AS resource WHERE FALSE)"

    def execute(self, sql: str, params: dict[str, object]) -> list[tuple[Any, ...]]:
        rows = self.spark.sql(sql, args=params or None).collect()
        return [tuple(_plain(v) for v in row) for row in rows]


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
