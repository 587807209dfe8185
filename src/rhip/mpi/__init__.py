"""Master patient index: every source Patient belongs to exactly one resident (多卡合一).

Real-time matching on arrival (:func:`match_and_link`), Splink batch re-linking
(:mod:`rhip.mpi.relink`, lazily imported), cards resolvable to residents, a review queue, and
audited, reversible corrections. See docs/mpi.md.
"""

from __future__ import annotations

from rhip.mpi.corrections import (
    ChangeResult,
    accept_review,
    link_record,
    merge_residents,
    merge_source_records,
    reject_review,
    revert_change,
    unlink_record,
    unmerge,
)
from rhip.mpi.features import RecordFeatures, blocking_keys, extract_features
from rhip.mpi.golden import build_golden, is_golden, refresh_golden
from rhip.mpi.hooks import MpiSink, install
from rhip.mpi.link import Candidate, LinkDecision
from rhip.mpi.model import MatchModel, load_model, score_pair
from rhip.mpi.schema import ensure_schema
from rhip.mpi.service import (
    match_and_link,
    resident_for_record,
    resident_records,
    resident_summary,
    resolve_card,
)
from rhip.mpi.truth import accuracy_against_truth

__all__ = [
    "Candidate",
    "ChangeResult",
    "LinkDecision",
    "MatchModel",
    "MpiSink",
    "RecordFeatures",
    "accept_review",
    "accuracy_against_truth",
    "blocking_keys",
    "build_golden",
    "ensure_schema",
    "extract_features",
    "install",
    "is_golden",
    "link_record",
    "load_model",
    "match_and_link",
    "merge_residents",
    "merge_source_records",
    "refresh_golden",
    "reject_review",
    "resident_for_record",
    "resident_records",
    "resident_summary",
    "resolve_card",
    "revert_change",
    "score_pair",
    "unlink_record",
    "unmerge",
]
