"""The Fellegi–Sunter match model: one definition read by the real-time scorer and by Splink.

Each comparison is a list of levels; each level has a SQL condition (for Splink on DuckDB or
Spark, over ``<column>_l`` / ``<column>_r``) and the equivalent Python predicate over two
:class:`~rhip.mpi.features.RecordFeatures`. Splink estimates the m and u probabilities of every
level (u by random sampling, m by expectation maximisation); the trained values are saved as JSON
and the real-time path sums the same log2(m/u) weights in Python, so a record matched on arrival
gets exactly the score the batch would give it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rapidfuzz.distance import DamerauLevenshtein, JaroWinkler

from rhip.mpi.features import RecordFeatures

Pred = Callable[[RecordFeatures, RecordFeatures], bool]

#: Splink dialect name -> (jaro-winkler function, damerau-levenshtein function).
_FUNCTIONS = {
    "duckdb": ("jaro_winkler_similarity", "damerau_levenshtein"),
    "spark": ("jaro_winkler", "damerau_levenshtein"),
}

ADDRESS_JW_THRESHOLD = 0.9


@dataclass(frozen=True)
class Level:
    """One comparison level: a label, its SQL template and the same test in Python."""

    label: str
    sql: str  # {jw} and {dl} are replaced by the dialect's function names
    pred: Pred
    is_null: bool = False


@dataclass(frozen=True)
class ComparisonDef:
    """One compared attribute with its ordered levels (first true level wins)."""

    name: str
    columns: tuple[str, ...]
    levels: tuple[Level, ...]


def _dl1(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and DamerauLevenshtein.distance(a, b, score_cutoff=2) <= 1


def _jw(a: str | None, b: str | None, threshold: float) -> bool:
    return a is not None and b is not None and JaroWinkler.similarity(a, b) >= threshold


def _null(col: str) -> Level:
    return Level(
        "null",
        f"{col}_l IS NULL OR {col}_r IS NULL",
        lambda a, b: getattr(a, col) is None or getattr(b, col) is None,
        is_null=True,
    )


def _exact(col: str, label: str = "exact") -> Level:
    return Level(label, f"{col}_l = {col}_r", lambda a, b: getattr(a, col) == getattr(b, col))


_ELSE = Level("else", "ELSE", lambda a, b: True)

COMPARISONS: tuple[ComparisonDef, ...] = (
    ComparisonDef(
        "citizen_id",
        ("cid", "cid_raw"),
        (
            _null("cid_raw"),
            Level("valid-exact", "cid_l = cid_r", lambda a, b: a.cid is not None and a.cid == b.cid),
            Level("one-edit", "{dl}(cid_raw_l, cid_raw_r) <= 1", lambda a, b: _dl1(a.cid_raw, b.cid_raw)),
            Level(
                "both-valid-differ",
                "cid_l IS NOT NULL AND cid_r IS NOT NULL",
                lambda a, b: a.cid is not None and b.cid is not None,
            ),
            _ELSE,
        ),
    ),
    ComparisonDef(
        "name",
        ("name", "name_py", "name_a"),
        (
            _null("name"),
            _exact("name"),
            _exact("name_py", "pinyin-exact"),
            Level(
                "one-char",
                "{dl}(name_a_l, name_a_r) <= 1 AND length(name_a_l) >= 3",
                lambda a, b: _dl1(a.name_a, b.name_a) and a.name_a is not None and len(a.name_a) >= 3,
            ),
            _ELSE,
        ),
    ),
    ComparisonDef(
        "birth_date",
        ("dob", "dob_swap"),
        (
            _null("dob"),
            _exact("dob"),
            Level(
                "day-month-swap",
                "dob_swap_l = dob_r",
                lambda a, b: a.dob_swap is not None and a.dob_swap == b.dob,
            ),
            Level("one-edit", "{dl}(dob_l, dob_r) <= 1", lambda a, b: _dl1(a.dob, b.dob)),
            _ELSE,
        ),
    ),
    ComparisonDef("sex", ("sex",), (_null("sex"), _exact("sex"), _ELSE)),
    ComparisonDef("phone", ("phone",), (_null("phone"), _exact("phone"), _ELSE)),
    ComparisonDef(
        "address",
        ("address", "district", "address_a"),
        (
            _null("address"),
            _exact("address"),
            Level(
                "similar",
                f"{{jw}}(address_a_l, address_a_r) >= {ADDRESS_JW_THRESHOLD}",
                lambda a, b: _jw(a.address_a, b.address_a, ADDRESS_JW_THRESHOLD),
            ),
            _exact("district", "same-district"),
            _ELSE,
        ),
    ),
)

#: Columns the Splink input frame needs (besides ``unique_id``).
#: Extra columns only the blocking rules use.
BLOCKING_COLUMNS: tuple[str, ...] = ("family_py",)
MODEL_COLUMNS: tuple[str, ...] = tuple(
    sorted({c for comp in COMPARISONS for c in comp.columns} | set(BLOCKING_COLUMNS))
)

#: Untrained starting values (m, u) per non-null level, used until a trained model is saved.
_DEFAULT_MU: dict[str, list[tuple[float, float]]] = {
    "citizen_id": [(0.90, 1e-7), (0.06, 1e-6), (0.001, 0.2), (0.039, 0.8)],
    "name": [(0.85, 0.001), (0.08, 0.0003), (0.04, 0.005), (0.03, 0.9937)],
    "birth_date": [(0.90, 0.00004), (0.03, 0.00001), (0.05, 0.0004), (0.02, 0.99955)],
    "sex": [(0.99, 0.5), (0.01, 0.5)],
    "phone": [(0.80, 0.0001), (0.20, 0.9999)],
    "address": [(0.65, 0.0005), (0.10, 0.002), (0.20, 0.1), (0.05, 0.8975)],
}


@dataclass
class MatchModel:
    """Trained parameters: prior, (m, u) per non-null level of each comparison, and thresholds.

    ``link_weight``: at or above, a pair is linked automatically; ``review_weight``: at or above
    (but below link) the pair goes to the review queue as a possible match; below, no match.
    Weights are log2 Bayes factors including the prior, so probability = 2^w / (1 + 2^w).
    """

    prior: float = 1e-5
    mu: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: dict(_DEFAULT_MU))
    link_weight: float = 8.0
    review_weight: float = 2.0
    trained_on: str = "defaults"

    def level_weights(self) -> dict[str, list[float]]:
        """log2(m/u) per non-null level of each comparison."""
        return {
            name: [math.log2(max(m, 1e-12) / max(u, 1e-12)) for m, u in pairs]
            for name, pairs in self.mu.items()
        }

    def to_json(self) -> str:
        """Serialise (what ``rhip link --train`` writes)."""
        data = {
            "prior": self.prior,
            "mu": {k: [list(p) for p in v] for k, v in self.mu.items()},
            "link_weight": self.link_weight,
            "review_weight": self.review_weight,
            "trained_on": self.trained_on,
        }
        return json.dumps(data, indent=2)

    @classmethod
    def from_json(cls, text: str) -> MatchModel:
        """Read a model written by :meth:`to_json`."""
        data: dict[str, Any] = json.loads(text)
        mu = {k: [(float(m), float(u)) for m, u in v] for k, v in data["mu"].items()}
        missing = [c.name for c in COMPARISONS if len(mu.get(c.name, [])) != len(c.levels) - 1]
        if missing:
            raise ValueError(f"model JSON lacks levels for comparisons {missing}")
        return cls(
            prior=float(data["prior"]),
            mu=mu,
            link_weight=float(data["link_weight"]),
            review_weight=float(data["review_weight"]),
            trained_on=str(data.get("trained_on", "")),
        )


PACKAGED_MODEL = Path(__file__).parent / "data" / "model.json"


def load_model(path: Path | None = None) -> MatchModel:
    """The model in force: ``path`` if given and present, else the packaged trained model, else defaults."""
    for candidate in (path, PACKAGED_MODEL):
        if candidate is not None and candidate.exists():
            return MatchModel.from_json(candidate.read_text(encoding="utf-8"))
    return MatchModel()


#: Name levels that alone may carry an automatic link (sounding the same is the same name).
NAME_LEVELS_FOR_LINK = frozenset({"exact", "pinyin-exact"})
#: Citizen-ID levels that vouch for a pair whose names differ.
CID_LEVELS_FOR_LINK = frozenset({"valid-exact", "one-edit"})


def auto_link_allowed(evidence: dict[str, tuple[str, float]]) -> bool:
    """Whether a pair may be linked without review (the twin rule).

    Twins share birth date, address and phone, so those agreements are not independent evidence;
    when the names differ beyond a homophone, only the citizen ID may vouch for the pair.
    """
    return evidence["name"][0] in NAME_LEVELS_FOR_LINK or evidence["citizen_id"][0] in CID_LEVELS_FOR_LINK


def auto_link_allowed_sql(dialect: str = "duckdb") -> str:
    """SQL over a Splink prediction (matching columns retained) equal to :func:`auto_link_allowed`."""
    _, dl = _FUNCTIONS[dialect]
    return (
        "coalesce(name_l = name_r, false) OR coalesce(name_py_l = name_py_r, false) "
        f"OR coalesce(cid_l = cid_r, false) OR coalesce({dl}(cid_raw_l, cid_raw_r) <= 1, false)"
    )


@dataclass(frozen=True)
class PairScore:
    """Score of one pair: total weight, probability and the evidence per comparison."""

    weight: float
    probability: float
    evidence: dict[str, tuple[str, float]]  # comparison -> (level label, weight contribution)


def score_pair(
    a: RecordFeatures, b: RecordFeatures, model: MatchModel, weights: dict[str, list[float]]
) -> PairScore:
    """Fellegi–Sunter score of two records: prior weight plus each comparison's level weight.

    ``weights`` is ``model.level_weights()``, passed in so callers compute it once.
    """
    total = math.log2(model.prior / (1 - model.prior))
    evidence: dict[str, tuple[str, float]] = {}
    for comp in COMPARISONS:
        for index, level in enumerate(comp.levels):
            if level.pred(a, b):
                contribution = 0.0 if level.is_null else weights[comp.name][index - 1]
                evidence[comp.name] = (level.label, round(contribution, 3))
                total += contribution
                break
    probability = 1.0 / (1.0 + 2.0 ** (-total)) if total > -1000 else 0.0
    return PairScore(round(total, 4), probability, evidence)


def splink_settings(
    model: MatchModel, dialect: str = "duckdb", blocking: list[str] | None = None
) -> dict[str, Any]:
    """Splink settings dictionary for this model (levels with current m/u as starting values)."""
    jw, dl = _FUNCTIONS[dialect]
    comparisons = []
    for comp in COMPARISONS:
        levels: list[dict[str, Any]] = []
        for index, level in enumerate(comp.levels):
            entry: dict[str, Any] = {
                "sql_condition": level.sql.format(jw=jw, dl=dl),
                "label_for_charts": level.label,
            }
            if level.is_null:
                entry["is_null_level"] = True
            else:
                m, u = model.mu[comp.name][index - 1]
                entry["m_probability"] = m
                entry["u_probability"] = u
            levels.append(entry)
        comparisons.append({"output_column_name": comp.name, "comparison_levels": levels})
    return {
        "link_type": "dedupe_only",
        "unique_id_column_name": "unique_id",
        "probability_two_random_records_match": model.prior,
        "comparisons": comparisons,
        "blocking_rules_to_generate_predictions": blocking or list(BATCH_BLOCKING_RULES),
        "additional_columns_to_retain": list(BLOCKING_COLUMNS),
        "retain_intermediate_calculation_columns": False,
        "retain_matching_columns": True,
    }


#: Blocking rules for batch prediction; together they keep recall under any single error.
BATCH_BLOCKING_RULES: tuple[str, ...] = (
    "l.cid_raw = r.cid_raw",
    "l.dob = r.dob AND l.family_py = r.family_py",
    "l.dob = r.dob AND l.district = r.district",
    "l.name_py = r.name_py AND substr(l.dob, 1, 4) = substr(r.dob, 1, 4)",
    "l.phone = r.phone",
)
