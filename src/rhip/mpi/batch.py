"""Batch linkage with Splink: train the model, score all pairs, cluster, rewrite the link table.

``rhip link --all`` runs this after tuning or a bulk load. The same model definition
(:mod:`rhip.mpi.model`) drives Splink on DuckDB (default, one machine) or on Spark (a region of tens
of millions). Pairs at or above the link weight (or sharing a trusted citizen ID) are clustered by
connected components; pairs in the review band that end up in different residents become review
items. Existing resident ids are kept where a cluster still holds their records and manual links
are kept as they are, so a re-link does not renumber the region.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rhip.mpi.features import RecordFeatures, extract_features
from rhip.mpi.golden import is_golden
from rhip.mpi.model import COMPARISONS, MODEL_COLUMNS, MatchModel, auto_link_allowed_sql, splink_settings
from rhip.mpi.protect import MpiSeal

log = logging.getLogger(__name__)

#: EM blocking rules: each leaves the other comparisons free to be estimated.
TRAINING_BLOCKING_RULES: tuple[str, ...] = (
    "l.dob = r.dob AND l.family_py = r.family_py",
    "l.phone = r.phone",
)

Progress = Callable[[str], None]

#: Smallest m and u kept from training (EM drives unseen levels towards zero).
M_FLOOR = 1e-3
U_FLOOR = 1e-8


@dataclass
class FeatureTable:
    """All source records' features, column by column (bounded memory at a million records)."""

    columns: dict[str, list[Any]] = field(
        default_factory=lambda: {c: [] for c in ("unique_id", *MODEL_COLUMNS)}
    )
    features: list[RecordFeatures] = field(default_factory=list)

    def add(self, features: RecordFeatures) -> None:
        """Append one record."""
        self.features.append(features)
        self.columns["unique_id"].append(features.record_id)
        for col in MODEL_COLUMNS:
            self.columns[col].append(getattr(features, col))

    def __len__(self) -> int:
        return len(self.features)

    def to_arrow(self) -> Any:
        """A pyarrow table (all string columns) for Splink."""
        import pyarrow as pa

        return pa.table({k: pa.array(v, type=pa.string()) for k, v in self.columns.items()})


def collect_features(patients: Iterable[dict[str, Any]], seal: MpiSeal | None = None) -> FeatureTable:
    """Features of every source Patient (golden Patients and ones without id are skipped).

    With a ``seal`` (the store's keys) they are sealed, so the citizen ID and phone Splink compares
    exactly are pseudonyms, as in the real-time path and the MPI tables.
    """
    table = FeatureTable()
    for patient in patients:
        if patient.get("id") and not is_golden(patient):
            features = extract_features(patient)
            table.add(seal.features(features) if seal is not None else features)
    return table


def _db_api(backend: str, spark: Any | None) -> Any:
    if backend == "duckdb":
        from splink import DuckDBAPI

        return DuckDBAPI()
    if backend == "spark":
        from splink import SparkAPI

        if spark is None:
            raise ValueError("the spark backend needs a SparkSession")
        # persist keeps lineage breaks in memory; production sets a checkpoint dir and uses "checkpoint".
        return SparkAPI(spark_session=spark, break_lineage_method="persist", num_partitions_on_repartition=1)
    raise ValueError(f"unknown linkage backend {backend!r} (duckdb or spark)")


def _register(db_api: Any, table: FeatureTable, backend: str, spark: Any | None) -> Any:
    if backend == "spark" and spark is not None:
        from pyspark.sql.types import StringType, StructField, StructType

        names = list(table.columns)
        schema = StructType([StructField(n, StringType(), True) for n in names])
        rows = list(zip(*(table.columns[n] for n in names), strict=True))
        return db_api.register(spark.createDataFrame(rows, schema=schema))
    return db_api.register(table.to_arrow())


def _linker(table: FeatureTable, model: MatchModel, backend: str, spark: Any | None) -> Any:
    from splink import Linker

    db_api = _db_api(backend, spark)
    return Linker(
        _register(db_api, table, backend, spark), splink_settings(model, backend), log_level=logging.WARNING
    )


def _model_from_linker(linker: Any, model: MatchModel, trained_on: str) -> MatchModel:
    data = linker.misc.save_model_to_json()
    mu: dict[str, list[tuple[float, float]]] = {}
    for comp, spec in zip(COMPARISONS, data["comparisons"], strict=True):
        pairs: list[tuple[float, float]] = []
        for index, level in enumerate(spec["comparison_levels"]):
            if level.get("is_null_level"):
                continue
            default_m, default_u = model.mu[comp.name][index - 1]
            m = level.get("m_probability") or default_m
            u = level.get("u_probability") or default_u
            # Floors: a level never seen among matches in training must not veto a link on its own.
            pairs.append((max(float(m), M_FLOOR), max(float(u), U_FLOOR)))
        mu[comp.name] = pairs
    prior = float(data.get("probability_two_random_records_match") or model.prior)
    return MatchModel(prior, mu, model.link_weight, model.review_weight, trained_on)


def train(
    table: FeatureTable,
    model: MatchModel,
    *,
    backend: str = "duckdb",
    spark: Any | None = None,
    max_pairs: float = 5e6,
    seed: int = 42,
) -> MatchModel:
    """Estimate the model's parameters with Splink; thresholds are kept from ``model``.

    * prior: from pairs sharing a trusted citizen ID (assumed recall 0.6: IDs are often missing);
    * u: random sampling of record pairs;
    * m of name, birth date, sex, phone, address: from pairs sharing a trusted citizen ID (the root
      of trust labels true matches, so twins and namesakes cannot leak into m as EM lets them);
    * m of the citizen-ID comparison itself: expectation maximisation blocked on phone.
    """  # fmt: skip
    # Splink averages m over training sessions, so EM (which twins contaminate) gets its own linker.
    em_linker = _linker(table, model, backend, spark)
    em_linker.training.estimate_u_using_random_sampling(max_pairs=max_pairs / 5, seed=seed)
    em_linker.training.estimate_parameters_using_expectation_maximisation(
        TRAINING_BLOCKING_RULES[1], max_pairs=max_pairs
    )
    after_em = _model_from_linker(em_linker, model, "")
    linker = _linker(table, model, backend, spark)
    linker.training.estimate_probability_two_random_records_match(["l.cid = r.cid"], recall=0.6)
    linker.training.estimate_u_using_random_sampling(max_pairs=max_pairs, seed=seed)
    linker.training.estimate_m_from_label_column("cid")
    trained = _model_from_linker(linker, model, f"splink-{backend}:{len(table)} records")
    trained.mu["citizen_id"] = after_em.mu["citizen_id"]
    return trained


@dataclass
class BatchResult:
    """Clusters of a batch run: record id -> cluster number, plus review-band pairs and timings."""

    clusters: dict[str, int]
    review_pairs: list[tuple[str, str, float, float]]  # (record, other record, weight, probability)
    link_pairs: int
    scored_pairs: int
    seconds: dict[str, float]


def _find(parent: dict[str, str], x: str) -> str:
    root = x
    while parent.get(root, root) != root:
        root = parent[root]
    while parent.get(x, x) != root:
        parent[x], x = root, parent[x]
    return root


_SAME_CID = "coalesce(cid_l = cid_r, false) AS same_cid"
#: Two different trusted citizen IDs are two people: such a pair is never an automatic link.
_DIFFERENT_CID = "coalesce(cid_l <> cid_r, false) AS different_cid"


def _pairs(
    linker: Any, model: MatchModel, backend: str, min_weight: float
) -> Iterator[tuple[str, str, float, float, str]]:
    """Scored pairs at or above ``min_weight`` with a verdict: same-cid, vetoed or ''."""
    df = linker.inference.predict(threshold_match_weight=min_weight, warning_mode="never")
    columns = (
        "unique_id_l", "unique_id_r", "match_weight", "match_probability", _SAME_CID, _DIFFERENT_CID,
        f"({auto_link_allowed_sql(backend)}) AS allowed",
    )  # fmt: skip
    if backend == "spark":
        rows = df.as_spark_dataframe().selectExpr(*columns).collect()
    else:
        rows = df.as_duckdbpyrelation().project(", ".join(columns)).fetchall()
    for left, right, weight, probability, same_cid, different_cid, allowed in rows:
        verdict = "same-cid" if same_cid else ("vetoed" if different_cid or not allowed else "")
        yield str(left), str(right), float(weight), float(probability), verdict


def scored_pairs(
    table: FeatureTable,
    model: MatchModel,
    *,
    backend: str = "duckdb",
    spark: Any | None = None,
    min_weight: float | None = None,
) -> list[tuple[str, str, float, float, str]]:
    """Blocked pairs scoring at least ``min_weight`` (default: review weight), with verdicts."""
    linker = _linker(table, model, backend, spark)
    floor = model.review_weight if min_weight is None else min_weight
    return list(_pairs(linker, model, backend, floor))


def cluster_pairs(
    record_ids: list[str], pairs: list[tuple[str, str, float, float, str]], link_weight: float
) -> tuple[dict[str, int], list[tuple[str, str, float, float]], int]:
    """Connected components of the link edges; returns clusters, the non-link pairs and the edge count.

    An edge is a pair sharing a trusted citizen ID, or scoring at least ``link_weight`` unless
    vetoed (different trusted IDs, or differing names without an ID to vouch: the twin rule).
    """
    parent: dict[str, str] = {}
    rest: list[tuple[str, str, float, float]] = []
    links = 0
    for left, right, weight, probability, verdict in pairs:
        if verdict == "same-cid" or (weight >= link_weight and verdict != "vetoed"):
            links += 1
            a, b = _find(parent, left), _find(parent, right)
            if a != b:
                parent[max(a, b)] = min(a, b)
        else:
            rest.append((left, right, weight, probability))
    roots: dict[str, int] = {}
    clusters = {rid: roots.setdefault(_find(parent, rid), len(roots)) for rid in record_ids}
    return clusters, rest, links


def link_all(
    table: FeatureTable,
    model: MatchModel,
    *,
    backend: str = "duckdb",
    spark: Any | None = None,
) -> BatchResult:
    """Score all blocked pairs with Splink and cluster them by connected components."""  # fmt: skip
    started = time.perf_counter()
    pairs = scored_pairs(table, model, backend=backend, spark=spark)
    predicted = time.perf_counter()
    clusters, review, links = cluster_pairs(table.columns["unique_id"], pairs, model.link_weight)
    review = [p for p in review if p[2] >= model.review_weight]
    done = time.perf_counter()
    seconds = {"predict": round(predicted - started, 2), "cluster": round(done - predicted, 2)}
    return BatchResult(clusters, review, links, len(pairs), seconds)


def assign_residents(
    clusters: dict[str, int], existing: dict[str, tuple[str, str]]
) -> tuple[dict[str, str], set[int]]:
    """Resident id per record: manual links kept, each cluster keeps the existing id most of it holds.

    ``existing``: record id -> (resident id, link source). Returns the mapping (records of clusters
    with no reusable id map to ``""``, i.e. a new resident is needed) and those cluster numbers.
    """
    members: dict[int, list[str]] = {}
    for record_id, cluster in clusters.items():
        if existing.get(record_id, ("", ""))[1] != "manual":
            members.setdefault(cluster, []).append(record_id)
    claimed = {res for res, source in existing.values() if source == "manual"}
    out = {rid: res for rid, (res, source) in existing.items() if source == "manual" and rid in clusters}
    fresh: set[int] = set()
    for cluster, records in sorted(members.items(), key=lambda kv: -len(kv[1])):
        votes = Counter(existing[r][0] for r in records if r in existing)
        choice = next((res for res, _ in votes.most_common() if res not in claimed), "")
        if choice:
            claimed.add(choice)
        else:
            fresh.add(cluster)
        for record_id in records:
            out[record_id] = choice
    return out, fresh
