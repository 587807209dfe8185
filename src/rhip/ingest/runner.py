"""Ingest files, folders and whole generated regions through the right connector.

``ingest_path`` picks the connector from the file type (``.ndjson`` FHIR, ``.json`` bundle,
``.hl7`` HL7 v2, ``.csv`` CSV mapping, ``.dcm`` DICOM, ``.jsonl`` device readings);
``ingest_region`` walks the generator's layout (``fhir/<facility>/``, ``fhir-bundles/<facility>/``,
``hl7v2/<facility>/``, ``csv/<facility>/``, ``dicom/<facility>/<study>/``, ``wearable/``,
``region/``, ``claims/``); with ``via_mllp`` it sends the HL7 messages through a real MLLP listener,
with ``via_http`` the device readings to the real HTTP endpoint.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rhip.config import get_settings
from rhip.errors import InvalidRequest
from rhip.ingest import csvmap, device, dicom, fhir_files, hl7v2, hl7v2_map  # noqa: F401 (registers mappers)
from rhip.ingest.lines import OVERLONG, read_lines
from rhip.ingest.model import BatchReport, Record, SourceInfo
from rhip.ingest.pipeline import Pipeline
from rhip.ingest.producer import RecordSource

log = logging.getLogger(__name__)
_TYPE_FILE = re.compile(r"^([A-Z][A-Za-z]+)(\.\d+)?\.ndjson$")
Progress = Callable[[str, BatchReport], None]


@dataclass
class RegionReport:
    """Reconciliation of a whole run: per connector and per facility."""

    by_connector: dict[str, BatchReport] = field(default_factory=dict)
    by_facility: dict[str, BatchReport] = field(default_factory=dict)

    def add(self, report: BatchReport) -> None:
        """Fold one batch report into the totals."""
        src = report.source
        for table, key in ((self.by_connector, src.connector), (self.by_facility, src.facility)):
            total = table.setdefault(key, BatchReport(key, SourceInfo(src.facility, src.connector)))
            total.add(report)

    @property
    def total(self) -> BatchReport:
        """All batches together."""
        out = BatchReport("total", SourceInfo("*", "*"))
        for rep in self.by_connector.values():
            out.add(rep)
        return out


def _ndjson_records(path: Path) -> Iterator[Record]:
    m = _TYPE_FILE.match(path.name)
    for rec in fhir_files.iter_ndjson(path):
        if m:
            rec.context["resourceType"] = m.group(1)
        yield rec


#: File extension -> connector of ``rhip ingest FILE``.
EXTENSIONS: dict[str, str] = {
    ".ndjson": fhir_files.NDJSON,
    ".json": fhir_files.BUNDLE,
    ".hl7": hl7v2.CONNECTOR,
    ".csv": csvmap.CONNECTOR,
    ".dcm": dicom.CONNECTOR,
    ".jsonl": device.CONNECTOR,
}


def connector_for(path: Path) -> str:
    """The connector name for a file, from its extension."""
    suffix = path.suffix.lower()
    if suffix not in EXTENSIONS:
        known = ", ".join(f"{ext} ({name})" for ext, name in EXTENSIONS.items())
        raise InvalidRequest(
            f"{path.name}: no connector for '{suffix}' files; known: {known}. "
            "Rename the file or choose one with --connector"
        )
    return EXTENSIONS[suffix]


def ingest_file(
    pipeline: Pipeline,
    path: Path,
    facility: str | None,
    *,
    connector: str | None = None,
    mapping: str | None = None,
) -> BatchReport:
    """Ingest one file with its connector; returns the batch's reconciliation counts.

    Without a ``facility``, an HL7 file is credited to the sender its first message names
    (MSH-4), as the MLLP listener does; other files to ``unknown``.
    """
    name = connector or connector_for(path)
    if not facility:
        facility = (hl7v2.file_sender(path) if name == hl7v2.CONNECTOR else "") or "unknown"
    source = SourceInfo(facility, name, str(path))
    if name == fhir_files.NDJSON:
        threshold = get_settings().ingest_producer_min_bytes
        parallel = 0 < threshold <= path.stat().st_size  # worth a producer process (~1 s to start)
        records = RecordSource(_ndjson_records, (path,), parallel=parallel)
        return pipeline.run(source, records, track=False, per_record_provenance=False)
    if name == fhir_files.BUNDLE:
        return pipeline.run(source, fhir_files.iter_bundle_files([path]))
    if name == hl7v2.CONNECTOR:
        return pipeline.run(source, hl7v2.iter_hl7_file(path))
    if name == csvmap.CONNECTOR:
        m = csvmap.load_mapping(mapping or "community-centre")
        return pipeline.run(
            source, csvmap.iter_csv(path, m), options={"mapping": m}, per_record_provenance=False
        )
    if name == dicom.CONNECTOR:
        return pipeline.run(
            source, dicom.iter_dicom_files([path]), track=False, options={"store": pipeline.store}
        )
    if name == device.CONNECTOR:
        return pipeline.run(source, _jsonl(path), per_record_provenance=False)
    known = ", ".join(sorted(set(EXTENSIONS.values())))
    raise InvalidRequest(f"unknown connector '{name}'; known: {known}")


def _jsonl(path: Path) -> Iterator[Record]:
    with path.open("rb") as fh:
        for lineno, line, size in read_lines(fh):
            if line.strip():
                rec = Record(line.strip(), f"{path.name}:{lineno}")
                if size > len(line):
                    rec.context[OVERLONG] = size
                yield rec


def _files(folder: Path, pattern: str) -> list[Path]:
    return sorted(p for p in folder.rglob(pattern) if p.is_file())


def ingest_region(
    pipeline: Pipeline,
    root: Path,
    *,
    via_mllp: bool = False,
    mllp_port: int = 0,
    via_http: bool = False,
    progress: Progress | None = None,
) -> RegionReport:
    """Ingest a generated region folder with every connector (see module docstring).

    ``via_mllp`` sends the HL7 v2 messages through a real MLLP listener and ``via_http`` posts
    the device readings to the real ``POST /ingest/device/{facility}`` endpoint, instead of
    reading both from their files.
    """
    report = RegionReport()

    def done(label: str, rep: BatchReport) -> None:
        report.add(rep)
        if progress:
            progress(label, rep)

    order = ("Organization", "Location", "Practitioner", "PractitionerRole", "Patient")
    for base in (root / "region", root / "fhir", root / "claims"):
        if not base.is_dir():
            continue
        files = _files(base, "*.ndjson")
        files.sort(
            key=lambda p: (order.index(p.stem.split(".")[0]) if p.stem.split(".")[0] in order else 99, str(p))
        )
        for path in files:
            facility = path.parent.name if base.name == "fhir" else base.name
            done(str(path.relative_to(root)), ingest_file(pipeline, path, facility))
    for path in _files(root / "fhir-bundles", "*.json") if (root / "fhir-bundles").is_dir() else []:
        done(str(path.relative_to(root)), ingest_file(pipeline, path, path.parent.name))
    hl7_root = root / "hl7v2"
    if hl7_root.is_dir():
        if via_mllp:
            for rep in _via_mllp(pipeline, hl7_root, mllp_port):
                done(f"hl7v2/{rep.source.facility} (MLLP)", rep)
        else:
            for path in _files(hl7_root, "*.hl7"):
                done(str(path.relative_to(root)), ingest_file(pipeline, path, path.parent.name))
    for path in _files(root / "csv", "*.csv") if (root / "csv").is_dir() else []:
        done(str(path.relative_to(root)), ingest_file(pipeline, path, path.parent.name))
    dicom_root = root / "dicom"
    if dicom_root.is_dir():
        for fac in sorted(p for p in dicom_root.iterdir() if p.is_dir()):
            files = _files(fac, "*.dcm")
            rep = pipeline.run(
                SourceInfo(fac.name, dicom.CONNECTOR, str(fac)),
                dicom.iter_dicom_files(files),
                track=False,  # re-mapped when re-delivered: see rhip.ingest.dicom
                options={"store": pipeline.store},
            )
            done(f"dicom/{fac.name}", rep)
    wearables = _files(root / "wearable", "*.jsonl") if (root / "wearable").is_dir() else []
    if via_http and wearables:
        done("wearable (HTTP)", device.post_files(pipeline, wearables, "wearable"))
    else:
        for path in wearables:
            done(str(path.relative_to(root)), ingest_file(pipeline, path, "wearable"))
    return report


def _via_mllp(pipeline: Pipeline, hl7_root: Path, port: int) -> list[BatchReport]:
    """Send every facility's messages over its own MLLP connection to a listener on 127.0.0.1."""
    from rhip.ingest.mllp import MLLPListener, run, send_messages

    async def main() -> list[BatchReport]:
        listener = MLLPListener(pipeline, "127.0.0.1", port)
        await listener.start()
        try:
            jobs = []
            for fac in sorted(p for p in hl7_root.iterdir() if p.is_dir()):
                messages: list[Any] = [
                    rec.raw for path in _files(fac, "*.hl7") for rec in hl7v2.iter_hl7_file(path)
                ]
                jobs.append(send_messages("127.0.0.1", listener.port, messages, timeout=120))
            await asyncio.gather(*jobs)
        finally:
            await listener.stop()
        return list(listener.reports.values())

    return run(main())
