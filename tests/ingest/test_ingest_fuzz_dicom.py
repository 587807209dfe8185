"""Fuzz: DICOM files with mutated header elements or damaged bytes; nothing crashes or is lost."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pydicom
import pytest
from fuzzing import ODD_BYTES, ODD_TEXT, assert_batch_sound, fuzz_settings, mutated_bytes, shown_on_failure
from hypothesis import assume, given
from hypothesis import strategies as st
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from rhip.ingest.dicom import iter_dicom_files
from rhip.ingest.model import SourceInfo

#: The header elements the mapper reads, and a few it does not.
KEYWORDS = [
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "PatientID",
    "IssuerOfPatientID",
    "Modality",
    "StudyDate",
    "StudyTime",
    "SeriesNumber",
    "InstanceNumber",
    "StudyDescription",
    "BodyPartExamined",
    "PatientName",
    "Rows",
]

element_values = st.one_of(
    st.sampled_from(ODD_TEXT).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from(ODD_BYTES),
    st.binary(max_size=24),
    st.sampled_from([b"1.2.3", b"20261301", b"256000", b"-1", b"1e400", b"NaN", b"1\\2", b"ISO_IR 100"]),
)


@pytest.fixture(scope="module")
def dicom_seeds(generated_region: Path) -> list[bytes]:
    """The DICOM files the generator wrote (one per study)."""
    return [p.read_bytes() for p in sorted((generated_region / "dicom").rglob("*.dcm"))]


@st.composite
def mutated_dicom(draw: st.DrawFn, raw: bytes) -> bytes:
    """A file whose header elements are deleted or hold odd bytes (written raw, unchecked)."""
    ds = pydicom.dcmread(io.BytesIO(raw))
    for _ in range(draw(st.integers(1, 3))):
        keyword = draw(st.sampled_from(KEYWORDS))
        tag = tag_for_keyword(keyword)
        assert tag is not None
        if draw(st.booleans()) and tag in ds:
            del ds[tag]
            continue
        value = draw(element_values)
        ds._dict[Tag(tag)] = RawDataElement(Tag(tag), dictionary_VR(tag), len(value), value, 0, False, True)
    if draw(st.booleans()):  # a declared character set other than the bytes' own (or none)
        charset = draw(st.sampled_from(["", "ISO_IR 100", "GB18030", "ISO 2022 IR 87", "ISO_IR 192"]))
        ds._dict[Tag(0x00080005)] = RawDataElement(
            Tag(0x00080005), "CS", len(charset), charset.encode(), 0, False, True
        )
    out = io.BytesIO()
    try:
        ds.save_as(out)
    except Exception:  # pydicom re-encodes some raw values on writing; such a file cannot be made
        assume(False)
    return out.getvalue()


@fuzz_settings(default=30)
@given(data=st.data())
def test_mutated_dicom_headers_are_stored_or_quarantined(
    data: st.DataObject, dicom_seeds: list[bytes], store_factory: Any, tmp_path: Path
) -> None:
    """Missing UIDs, odd numbers, dates, character sets and byte damage: a reason or a valid study."""
    files = []
    for _ in range(data.draw(st.integers(1, 2))):
        raw = data.draw(st.sampled_from(dicom_seeds))
        raw = data.draw(mutated_dicom(raw)) if data.draw(st.booleans()) else data.draw(mutated_bytes(raw))
        files.append(raw)
    with shown_on_failure(files=files), store_factory.pipeline() as pipeline:
        paths = []
        for n, raw in enumerate(files):
            path = tmp_path / f"example-{store_factory.count}-{n}.dcm"
            path.write_bytes(raw)
            paths.append(path)
        source = SourceInfo("330402T01", "dicom", str(tmp_path))
        report = pipeline.run(source, iter_dicom_files(paths), options={"store": pipeline.store})
        assert_batch_sound(pipeline, report, received=len(paths))
