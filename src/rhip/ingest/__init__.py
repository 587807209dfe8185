"""Ingestion: every facility system in (FHIR, HL7 v2/MLLP, CSV, DICOM, devices), nothing lost.

Connectors turn input into records; the :class:`Pipeline` maps, canonicalises, validates and writes
them through the store's bulk path with Provenance, de-duplicates re-deliveries and quarantines
what it cannot use, with reasons, for replay.
"""

from rhip.ingest.hooks import (
    PatientSink,
    RecordObserver,
    install_default_sinks,
    patient_sinks,
    register_patient_sink,
    unregister_patient_sink,
)
from rhip.ingest.mappers import MAPPERS, MapContext, register_mapper
from rhip.ingest.model import BatchReport, Mapped, MappingError, Record, SourceInfo
from rhip.ingest.pipeline import Pipeline
from rhip.ingest.schema import INGEST_TABLES, ensure_schema

__all__ = [
    "INGEST_TABLES",
    "MAPPERS",
    "BatchReport",
    "MapContext",
    "Mapped",
    "MappingError",
    "PatientSink",
    "Pipeline",
    "Record",
    "RecordObserver",
    "SourceInfo",
    "ensure_schema",
    "install_default_sinks",
    "patient_sinks",
    "register_mapper",
    "register_patient_sink",
    "unregister_patient_sink",
]
