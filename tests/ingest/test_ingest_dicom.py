"""DICOM headers -> ImagingStudy; pixel data never stored; files of one study merge in any order."""

from __future__ import annotations

from pathlib import Path

from pydicom.uid import generate_uid

from imaging_feeds import dicom_file
from rhip.ingest.pipeline import Pipeline
from rhip.ingest.runner import ingest_file


def _dicom(path: Path, study: str, series: str, number: int, patient_id: str = "0000000001") -> Path:
    return dicom_file(
        path,
        study,
        patient_id,
        "330402S01",
        body_part=None,
        series=series,
        number=number,
        description="胸部CT",
    )


def test_study_with_two_instances(pipeline: Pipeline, tmp_path: Path) -> None:
    study, series = generate_uid(), generate_uid()
    for n in (1, 2):
        rep = ingest_file(pipeline, _dicom(tmp_path / f"{n}.dcm", study, series, n), "330402S01")
        assert rep.stored == 1, rep
    studies = [b for b, *_ in pipeline.store.iter_current("ImagingStudy") if b]
    assert len(studies) == 1
    s = studies[0]
    assert s["numberOfSeries"] == 1 and s["numberOfInstances"] == 2
    assert s["series"][0]["modality"]["code"] == "CT"
    assert s["started"] == "2026-03-01T10:15:00+08:00"
    assert s["subject"]["identifier"]["value"] == "0000000001"
    assert "PixelData" not in str(s) and "Wang" not in str(s)


def test_bad_dicom_is_quarantined(sqlite_pipeline: Pipeline, tmp_path: Path) -> None:
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not a dicom file at all")
    no_uid = _dicom(tmp_path / "nouid.dcm", generate_uid(), generate_uid(), 1, patient_id="")
    assert ingest_file(sqlite_pipeline, bad, "F1").quarantined == 1
    assert ingest_file(sqlite_pipeline, no_uid, "F1").quarantined == 1
    assert sqlite_pipeline.store.count("ImagingStudy") == 0


def test_records_carry_the_header_never_the_pixels(tmp_path: Path) -> None:
    from rhip.ingest.dicom import UNREADABLE_KEPT, iter_dicom_files

    path = _dicom(tmp_path / "1.dcm", generate_uid(), generate_uid(), 1)
    (record,) = iter_dicom_files([path])
    whole = path.read_bytes()
    assert whole.startswith(record.raw) and len(record.raw) < len(whole)
    assert b"\xe0\x7f\x10\x00" not in record.raw  # the (7FE0,0010) Pixel Data tag
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"x" * (UNREADABLE_KEPT + 10))
    (kept,) = iter_dicom_files([junk])
    assert len(kept.raw) == UNREADABLE_KEPT
