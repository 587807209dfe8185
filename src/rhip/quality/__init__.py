"""Data quality (数据质量): rules over ingested records and scores per source, day and rule."""

from rhip.quality.collector import QualityCollector
from rhip.quality.rules import DIMENSIONS, RULES, Rule, RuleContext, catalogue, register_rule
from rhip.quality.scores import facility_scores, rule_scores

__all__ = [
    "DIMENSIONS",
    "RULES",
    "QualityCollector",
    "Rule",
    "RuleContext",
    "catalogue",
    "facility_scores",
    "register_rule",
    "rule_scores",
]
