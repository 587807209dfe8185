"""The same model on Splink's Spark backend (local mode, small data) gives the DuckDB clusters."""

from __future__ import annotations

from typing import Any

import pytest

from rhip.mpi.batch import collect_features, link_all
from rhip.mpi.model import load_model
from rhip.mpi.sample import sample_population


@pytest.mark.spark
@pytest.mark.slow
def test_spark_backend_matches_duckdb(spark_session: Any) -> None:
    patients, _ = sample_population(40, seed=13)
    table = collect_features(patients)
    model = load_model()
    duck = link_all(table, model, backend="duckdb")
    result = link_all(table, model, backend="spark", spark=spark_session)
    assert result.scored_pairs == duck.scored_pairs and result.link_pairs == duck.link_pairs

    def groups(clusters: dict[str, int]) -> set[frozenset[str]]:
        out: dict[int, set[str]] = {}
        for record, cluster in clusters.items():
            out.setdefault(cluster, set()).add(record)
        return {frozenset(v) for v in out.values()}

    assert groups(result.clusters) == groups(duck.clusters)
