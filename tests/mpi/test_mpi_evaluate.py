"""Accuracy measures against hand-counted examples."""

from __future__ import annotations

from rhip.mpi.evaluate import evaluate


def test_perfect_linkage() -> None:
    truth = {"a": "P1", "b": "P1", "c": "P2"}
    acc = evaluate({"a": "x", "b": "x", "c": "y"}, truth)
    assert acc.pair_precision == acc.pair_recall == acc.bcubed_precision == acc.bcubed_recall == 1.0
    assert acc.wrong_link_share == acc.split_share == 0.0


def test_one_wrong_link_and_one_split() -> None:
    # P1 = {a, b, c} split into {a, b} and {c}; c wrongly joined with P2's d.
    truth = {"a": "P1", "b": "P1", "c": "P1", "d": "P2"}
    predicted = {"a": "x", "b": "x", "c": "y", "d": "y"}
    acc = evaluate(predicted, truth)
    assert (acc.false_pairs, acc.missed_pairs) == (1, 2)
    assert acc.pair_precision == 0.5 and round(acc.pair_recall, 4) == round(1 / 3, 4)
    assert acc.wrong_link_share == 0.5 and acc.split_share == 0.5
    # B-cubed precision: a, b -> 1; c, d -> 1/2 each: (1 + 1 + .5 + .5) / 4
    assert acc.bcubed_precision == 0.75
