"""Public-health surveillance: case counting, aberration detection, alerts and evaluation.

Counts notifiable-disease cases from the lake by disease × area × week, runs the published
aberration-detection methods (EARS, Farrington flexible, CUSUM; exact ports of R's
``surveillance`` package) and keeps de-duplicated alerts that officers acknowledge and close.
Names are loaded on first use so ``rhip --help`` does not import numpy/scipy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rhip.surveillance.areas import DistrictDirectory
    from rhip.surveillance.cusum import cusum
    from rhip.surveillance.ears import ears
    from rhip.surveillance.farrington import FarringtonControl, farrington_flexible
    from rhip.surveillance.methods import MethodSpec, detect, get_method, method_names, register_method
    from rhip.surveillance.result import DetectionResult

_NAMES = {
    "DetectionResult": "result",
    "DistrictDirectory": "areas",
    "FarringtonControl": "farrington",
    "MethodSpec": "methods",
    "cusum": "cusum",
    "detect": "methods",
    "ears": "ears",
    "farrington_flexible": "farrington",
    "get_method": "methods",
    "method_names": "methods",
    "register_method": "methods",
}

__all__ = [
    "DetectionResult",
    "DistrictDirectory",
    "FarringtonControl",
    "MethodSpec",
    "cusum",
    "detect",
    "ears",
    "farrington_flexible",
    "get_method",
    "method_names",
    "register_method",
]


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(importlib.import_module(f"rhip.surveillance.{_NAMES[name]}"), name)
    if name in ("areas", "methods", "alerts", "counting", "runner", "evaluation", "glm", "definitions"):
        return importlib.import_module(f"rhip.surveillance.{name}")
    raise AttributeError(name)
