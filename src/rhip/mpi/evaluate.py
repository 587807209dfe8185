"""Accuracy of a linkage against known truth: pairwise, B-cubed and cluster-level measures.

Pairwise counts come from the contingency table of (predicted resident, true resident), so a
million records are evaluated without enumerating pairs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Accuracy:
    """Linkage accuracy of source-record pairs and clusters."""

    records: int
    true_residents: int
    predicted_residents: int
    pair_precision: float
    pair_recall: float
    pair_f1: float
    bcubed_precision: float
    bcubed_recall: float
    wrong_link_share: float  # predicted residents holding records of more than one true person
    split_share: float  # true persons spread over more than one predicted resident
    false_pairs: int
    missed_pairs: int

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON and tables)."""
        return asdict(self)


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def evaluate(predicted: Mapping[str, str], truth: Mapping[str, str]) -> Accuracy:
    """Compare predicted resident ids with true resident keys for the records both know."""
    ids = [r for r in truth if r in predicted]
    cells = Counter((predicted[r], truth[r]) for r in ids)
    pred_sizes = Counter(predicted[r] for r in ids)
    true_sizes = Counter(truth[r] for r in ids)
    tp = sum(_pairs(n) for n in cells.values())
    pred_pairs = sum(_pairs(n) for n in pred_sizes.values())
    true_pairs = sum(_pairs(n) for n in true_sizes.values())
    precision = tp / pred_pairs if pred_pairs else 1.0
    recall = tp / true_pairs if true_pairs else 1.0
    n = len(ids) or 1
    b_precision = sum(c * c / pred_sizes[p] for (p, _), c in cells.items()) / n
    b_recall = sum(c * c / true_sizes[t] for (_, t), c in cells.items()) / n
    persons_per_pred = Counter(p for p, _ in cells)
    preds_per_true = Counter(t for _, t in cells)
    return Accuracy(
        records=len(ids),
        true_residents=len(true_sizes),
        predicted_residents=len(pred_sizes),
        pair_precision=round(precision, 6),
        pair_recall=round(recall, 6),
        pair_f1=round(2 * precision * recall / (precision + recall), 6) if precision + recall else 0.0,
        bcubed_precision=round(b_precision, 6),
        bcubed_recall=round(b_recall, 6),
        wrong_link_share=round(sum(v > 1 for v in persons_per_pred.values()) / (len(pred_sizes) or 1), 6),
        split_share=round(sum(v > 1 for v in preds_per_true.values()) / (len(true_sizes) or 1), 6),
        false_pairs=pred_pairs - tp,
        missed_pairs=true_pairs - tp,
    )
