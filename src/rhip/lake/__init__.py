"""Analytics lake: SQL-on-FHIR v2 views compiled to DuckDB/Spark SQL over a Parquet lake."""

from rhip.lake.compiler import Column, CompiledView, compile_view, validate_view
from rhip.lake.engine import DuckDBEngine, Engine, SparkEngine, ViewResult
from rhip.lake.export import ExportReport, export_store
from rhip.lake.library import example_queries, load_views, materialize, store_views

__all__ = [
    "Column",
    "CompiledView",
    "DuckDBEngine",
    "Engine",
    "ExportReport",
    "SparkEngine",
    "ViewResult",
    "compile_view",
    "example_queries",
    "export_store",
    "load_views",
    "materialize",
    "store_views",
    "validate_view",
]
