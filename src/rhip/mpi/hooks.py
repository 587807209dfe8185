"""The MPI as an ingest patient sink: every stored source Patient is matched on arrival.

ingest defines :class:`rhip.ingest.hooks.PatientSink`; :class:`MpiSink` implements it and
:func:`install` registers it, so ingest never imports the MPI.
"""

from __future__ import annotations

import logging
from typing import Any

from rhip.mpi.corrections import merge_source_records
from rhip.mpi.golden import is_golden
from rhip.mpi.service import match_and_link

log = logging.getLogger(__name__)


class MpiSink:
    """Links each stored Patient (real-time matching) and folds ADT^A40 merges into residents."""

    def on_patient_stored(self, store: Any, patient: dict[str, Any], source: Any) -> None:
        """Match and link one stored source Patient."""
        if patient.get("resourceType") == "Patient" and not is_golden(patient):
            match_and_link(store, patient)

    def on_merge(self, store: Any, survivor_ref: str, merged_ref: str, source: Any) -> None:
        """ADT^A40: the merged record's resident is merged into the survivor's (both records kept)."""
        survivor, merged = survivor_ref.removeprefix("Patient/"), merged_ref.removeprefix("Patient/")
        for record_id in (survivor, merged):
            if _unknown(store, record_id):
                match_and_link(store, store.read("Patient", record_id))
        actor = f"hl7v2:{getattr(source, 'name', None) or getattr(source, 'facility', None) or 'ADT^A40'}"
        merge_source_records(store, survivor, merged, actor=actor)


def _unknown(store: Any, record_id: str) -> bool:
    from rhip.mpi.service import resident_for_record

    with store.engine.connect() as conn:
        return resident_for_record(conn, record_id) is None


_SINK = MpiSink()


def install() -> MpiSink:
    """Register the MPI with ingest (idempotent) and return the sink."""
    from rhip.ingest.hooks import register_patient_sink

    register_patient_sink(_SINK)
    return _SINK
