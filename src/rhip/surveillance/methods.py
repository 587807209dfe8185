"""Registry of aberration-detection methods.

Built-in methods register exactly as a region's own method would (``register_method``), so a
signal names its method and parameters as data and the runner looks them up here. Every method
takes counts ``(T,)`` or ``(T, S)`` and returns a :class:`DetectionResult`.

Built-ins and their sources (parameter names follow R's ``surveillance`` package):

- ``ears_c1``, ``ears_c2``, ``ears_c3``: Hutwagner et al. 2003, R ``earsC``.
- ``farrington``: Farrington et al. 1996 options of R ``farringtonFlexible`` (``noPeriods=1``,
  ``weightsThreshold=1``, ``pastWeeksNotIncluded=w``, ``thresholdMethod="delta"``).
- ``noufaily``: the improved method of Noufaily et al. 2013 (``noPeriods=10``,
  ``weightsThreshold=2.58``, ``pastWeeksNotIncluded=26``, ``thresholdMethod="nbPlugin"``).
- ``cusum_rossi``: Poisson CUSUM with Rossi et al. 1999's transform, R ``cusum``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rhip.errors import InvalidRequest
from rhip.surveillance.cusum import cusum
from rhip.surveillance.ears import ears
from rhip.surveillance.farrington import FarringtonControl, farrington_flexible
from rhip.surveillance.result import DetectionResult

__all__ = ["MethodSpec", "detect", "get_method", "method_names", "register_method"]

DetectorFunc = Callable[..., DetectionResult]


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: callable plus its default parameters."""

    name: str
    func: DetectorFunc
    params: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""


_REGISTRY: dict[str, MethodSpec] = {}


def register_method(
    name: str, func: DetectorFunc, *, params: Mapping[str, Any] | None = None, description: str = ""
) -> MethodSpec:
    """Register ``func(observed, *, freq, dates, timepoints, **params) -> DetectionResult``.

    Registering an existing name replaces it (a region may tune a built-in).
    """
    spec = MethodSpec(name, func, dict(params or {}), description)
    _REGISTRY[name] = spec
    return spec


def get_method(name: str) -> MethodSpec:
    """The method registered as ``name``; InvalidRequest naming the known ones otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InvalidRequest(
            f"unknown aberration-detection method {name!r}; known: {', '.join(sorted(_REGISTRY))}"
        ) from None


def method_names() -> list[str]:
    """Names of all registered methods, sorted."""
    return sorted(_REGISTRY)


def detect(
    name: str,
    observed: NDArray[np.float64],
    *,
    freq: int = 52,
    dates: Sequence[dt.date] | None = None,
    timepoints: Sequence[int] | None = None,
    **params: Any,
) -> DetectionResult:
    """Run method ``name`` with its registered defaults overridden by ``params``."""
    spec = get_method(name)
    merged = {**spec.params, **params}
    res = spec.func(observed, freq=freq, dates=dates, timepoints=timepoints, **merged)
    res.method = name
    return res


def _ears(method: str) -> DetectorFunc:
    def run(
        observed: NDArray[np.float64],
        *,
        freq: int,
        dates: Sequence[dt.date] | None,
        timepoints: Sequence[int] | None,
        **params: Any,
    ) -> DetectionResult:
        return ears(observed, method=method, timepoints=timepoints, **params)

    return run


_FF_FIELDS = {f.name for f in fields(FarringtonControl)}


def _farrington(
    observed: NDArray[np.float64],
    *,
    freq: int,
    dates: Sequence[dt.date] | None,
    timepoints: Sequence[int] | None,
    **params: Any,
) -> DetectionResult:
    unknown = set(params) - _FF_FIELDS
    if unknown:
        raise InvalidRequest(f"unknown farringtonFlexible parameter(s): {', '.join(sorted(unknown))}")
    if "limit54" in params:
        params["limit54"] = tuple(params["limit54"])
    return farrington_flexible(
        observed, freq=freq, dates=dates, timepoints=timepoints, control=FarringtonControl(**params)
    )


def _cusum(
    observed: NDArray[np.float64],
    *,
    freq: int,
    dates: Sequence[dt.date] | None,
    timepoints: Sequence[int] | None,
    **params: Any,
) -> DetectionResult:
    return cusum(observed, timepoints=timepoints, **params)


for _m in ("C1", "C2", "C3"):
    register_method(
        f"ears_{_m.lower()}",
        _ears(_m),
        params={"baseline": 7},
        description=f"EARS {_m} (Hutwagner et al. 2003)",
    )
register_method(
    "farrington",
    _farrington,
    params={
        "b": 5,
        "w": 3,
        "noPeriods": 1,
        "weightsThreshold": 1.0,
        "pastWeeksNotIncluded": 3,
        "thresholdMethod": "delta",
        "alpha": 0.05,
    },
    description="Farrington et al. 1996 (farringtonFlexible, original options)",
)
register_method(
    "noufaily",
    _farrington,
    params={
        "b": 5,
        "w": 3,
        "noPeriods": 10,
        "weightsThreshold": 2.58,
        "pastWeeksNotIncluded": 26,
        "thresholdMethod": "nbPlugin",
        "alpha": 0.05,
    },
    description="Noufaily et al. 2013 improved Farrington (farringtonFlexible)",
)
register_method(
    "cusum_rossi",
    _cusum,
    params={"trans": "rossi", "k": 1.04, "h": 2.26, "baseline": 104},
    description="Poisson CUSUM, Rossi et al. 1999 transform (R cusum)",
)
