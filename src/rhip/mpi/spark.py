"""Splink's Spark backend for regions of tens of millions (pyspark is an optional extra).

The model, blocking rules and clustering are the ones of the DuckDB path; only the engine changes.
Production points ``RHIP_SPARK_MASTER`` style settings at a cluster; here a local session is made.
"""

from __future__ import annotations

from typing import Any


def local_session(cores: int = 1, memory: str = "2g") -> Any:
    """A local SparkSession with Splink's similarity UDF jar (``local[cores]``)."""
    import tempfile

    from pyspark.sql import SparkSession
    from splink.backends.spark import similarity_jar_location

    session = (
        SparkSession.builder.master(f"local[{cores}]")
        .appName("rhip-mpi")
        .config("spark.driver.memory", memory)
        .config("spark.jars", similarity_jar_location())
        .config("spark.sql.shuffle.partitions", str(cores))
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    session.sparkContext.setCheckpointDir(tempfile.mkdtemp(prefix="rhip-spark-"))
    return session
