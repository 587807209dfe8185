"""Out-of-order HL7 updates are refused per resource; Patients and merges reach the identity hook."""

from __future__ import annotations

from typing import Any

from rhip.ingest.hooks import (
    install_default_sinks,
    patient_sinks,
    register_patient_sink,
    unregister_patient_sink,
)
from rhip.ingest.model import Record, SourceInfo
from rhip.ingest.pipeline import Pipeline

A08 = (
    "MSH|^~\\&|HIS|H1|RHIP|R|{ts}||ADT^A08^ADT_A01|{ctrl}|P|2.5\r"
    "PID|1||M1^^^H1^MR||{family}^Hua||19700101|F\r"
)
A40 = (
    "MSH|^~\\&|HIS|H1|RHIP|R|20261101120000||ADT^A40^ADT_A39|MRG-1|P|2.5\r"
    "PID|1||M1^^^H1^MR||Zhou^Hua||19700101|F\rMRG|M2^^^H1^MR\r"
)


def _send(pipeline: Pipeline, *messages: str) -> Any:
    records = [Record(m.encode(), f"m{i}", key=m.split("|")[9]) for i, m in enumerate(messages)]
    return pipeline.run(SourceInfo("H1", "hl7v2", "test"), records)


def test_older_update_after_newer_is_stale(pipeline: Pipeline) -> None:
    newer = A08.format(ts="20261101100000", ctrl="C2", family="Zhou")
    older = A08.format(ts="20261101090000", ctrl="C1", family="Wu")
    rep = _send(pipeline, newer)
    assert rep.stored == 1
    rep = _send(pipeline, older)
    assert (rep.stale, rep.stored) == (1, 0) and rep.reconciled
    patient = next(iter(pipeline.store.iter_current("Patient")))[0]
    assert patient is not None and patient["name"][0]["family"] == "Zhou"
    latest = A08.format(ts="20261101110000", ctrl="C3", family="Zheng")
    assert _send(pipeline, latest).stored == 1
    patient = next(iter(pipeline.store.iter_current("Patient")))[0]
    assert (
        patient is not None
        and patient["name"][0]["family"] == "Zheng"
        and patient["meta"]["versionId"] == "2"
    )


def test_out_of_order_within_one_batch(sqlite_pipeline: Pipeline) -> None:
    rep = _send(
        sqlite_pipeline,
        A08.format(ts="20261101100000", ctrl="D2", family="Zhou"),
        A08.format(ts="20261101090000", ctrl="D1", family="Wu"),
    )
    assert (rep.stored, rep.stale) == (1, 1)
    patient = next(iter(sqlite_pipeline.store.iter_current("Patient")))[0]
    assert patient is not None and patient["name"][0]["family"] == "Zhou"


class _Sink:
    def __init__(self) -> None:
        self.patients: list[str] = []
        self.merges: list[tuple[str, str]] = []

    def on_patient_stored(self, store: Any, patient: dict[str, Any], source: SourceInfo) -> None:
        assert store.read("Patient", patient["id"])["id"] == patient["id"]  # already committed
        self.patients.append(patient["id"])

    def on_merge(self, store: Any, survivor_ref: str, merged_ref: str, source: SourceInfo) -> None:
        self.merges.append((survivor_ref, merged_ref))


def test_patient_sink_gets_patients_and_merges(sqlite_pipeline: Pipeline) -> None:
    sink = _Sink()
    register_patient_sink(sink)
    try:
        _send(sqlite_pipeline, A08.format(ts="20261101100000", ctrl="E1", family="Zhou"), A40)
    finally:
        unregister_patient_sink(sink)
    assert len(sink.patients) == 2 and len(set(sink.patients)) == 1
    ((survivor, merged),) = sink.merges
    assert survivor == f"Patient/{sink.patients[0]}" and merged.startswith("Patient/") and merged != survivor


def test_default_sinks_install_the_identity_layer() -> None:
    before = patient_sinks()
    try:
        installed = install_default_sinks()
        assert installed == ["rhip.mpi.hooks"]
        assert len(patient_sinks()) == len(before) + 1
        assert install_default_sinks() == ["rhip.mpi.hooks"] and len(patient_sinks()) == len(before) + 1
        assert install_default_sinks(("rhip.not_a_module",)) == []
    finally:
        for sink in patient_sinks():
            if sink not in before:
                unregister_patient_sink(sink)
