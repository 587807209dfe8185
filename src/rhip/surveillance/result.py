"""The common result of every aberration-detection method.

Methods differ in what they compute, but an alert needs the same few numbers for each evaluated
week: observed count, expected count, upper bound, alarm and a score. Rows that a method did not
evaluate (the baseline at the start of a series) hold NaN / ``False`` with ``evaluated`` False.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["DetectionResult"]


@dataclass
class DetectionResult:
    """Per-week output of a method; arrays are ``(T,)`` or ``(T, S)`` like the input."""

    method: str
    observed: NDArray[np.float64]
    expected: NDArray[np.float64]
    upperbound: NDArray[np.float64]
    alarm: NDArray[np.bool_]
    score: NDArray[np.float64]
    pvalue: NDArray[np.float64]
    evaluated: NDArray[np.bool_]  # (T,)

    @classmethod
    def empty(cls, method: str, observed: NDArray[np.float64]) -> DetectionResult:
        """A result with nothing evaluated yet, shaped like ``observed``."""
        nan = np.full(observed.shape, np.nan)
        return cls(
            method,
            observed,
            nan.copy(),
            nan.copy(),
            np.zeros(observed.shape, dtype=bool),
            nan.copy(),
            nan.copy(),
            np.zeros(observed.shape[0], dtype=bool),
        )

    def squeeze(self, ndim: int) -> DetectionResult:
        """Drop the series axis again when the input was one series."""
        if ndim != 1:
            return self
        return DetectionResult(
            self.method,
            self.observed[:, 0],
            self.expected[:, 0],
            self.upperbound[:, 0],
            self.alarm[:, 0],
            self.score[:, 0],
            self.pvalue[:, 0],
            self.evaluated,
        )
