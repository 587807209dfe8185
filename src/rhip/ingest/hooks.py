"""Hooks through which ingest hands work to later stages without importing them.

The identity layer (``rhip.mpi``) registers a :class:`PatientSink`; quality rules register an
:class:`RecordObserver`. Built-ins register the same way a region's own extension would, and the
default is to do nothing, so ingest runs on its own.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol, runtime_checkable

from rhip.ingest.model import Mapped, Record, SourceInfo

log = logging.getLogger(__name__)


@runtime_checkable
class PatientSink(Protocol):
    """Receives every Patient after its batch is stored, and every ADT^A40 merge."""

    def on_patient_stored(self, store: Any, patient: dict[str, Any], source: SourceInfo) -> None:
        """Called once per stored Patient (after the batch transaction committed)."""

    def on_merge(self, store: Any, survivor_ref: str, merged_ref: str, source: SourceInfo) -> None:
        """Called for a merge message: ``merged_ref`` (``Patient/<id>``) folds into ``survivor_ref``."""


@runtime_checkable
class RecordObserver(Protocol):
    """Sees every record outcome (quality rules use this to score sources)."""

    def on_stored(self, record: Record, mapped: Mapped, source: SourceInfo, arrival: float) -> None:
        """A record was mapped, validated and is about to be written."""

    def on_quarantined(self, record: Record, reasons: list[dict[str, str]], source: SourceInfo) -> None:
        """A record was quarantined with these reasons."""


_PATIENT_SINKS: list[PatientSink] = []

#: Modules whose ``install()`` registers a built-in sink (the identity layer), loaded on demand the
#: way an outside extension would be; a module that is not present is skipped.
DEFAULT_SINK_MODULES: tuple[str, ...] = ("rhip.mpi.hooks",)


def install_default_sinks(modules: tuple[str, ...] = DEFAULT_SINK_MODULES) -> list[str]:
    """Import each module and call its ``install()``; returns the modules installed."""
    import importlib

    installed = []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue
            raise
        install = getattr(module, "install", None)
        if callable(install):
            install()
            installed.append(name)
    return installed


def register_patient_sink(sink: PatientSink) -> None:
    """Add a sink that every later ingest run notifies (idempotent per object)."""
    if sink not in _PATIENT_SINKS:
        _PATIENT_SINKS.append(sink)


def unregister_patient_sink(sink: PatientSink) -> None:
    """Remove a sink registered before (no error if absent)."""
    if sink in _PATIENT_SINKS:
        _PATIENT_SINKS.remove(sink)


def patient_sinks() -> list[PatientSink]:
    """The sinks currently registered, in registration order."""
    return list(_PATIENT_SINKS)


def notify_patients(store: Any, patients: list[dict[str, Any]], source: SourceInfo) -> None:
    """Hand stored patients to every sink; a failing sink is logged, never loses the batch."""
    for sink in _PATIENT_SINKS:
        for patient in patients:
            try:
                sink.on_patient_stored(store, patient, source)
            except Exception:
                log.exception("patient sink %s failed", type(sink).__name__)


def notify_merge(store: Any, survivor_ref: str, merged_ref: str, source: SourceInfo) -> None:
    """Hand a merge to every sink."""
    for sink in _PATIENT_SINKS:
        try:
            sink.on_merge(store, survivor_ref, merged_ref, source)
        except Exception:
            log.exception("patient sink %s failed on merge", type(sink).__name__)
