"""Output formats of the generator, registered by name (``--formats``)."""

from rhip.synth.writers import claims, csv_extract, dicom, fhir, hl7v2, truth, wearable
from rhip.synth.writers.base import WRITERS, Writer, register_writer

__all__ = [
    "WRITERS",
    "Writer",
    "claims",
    "csv_extract",
    "dicom",
    "fhir",
    "hl7v2",
    "register_writer",
    "truth",
    "wearable",
]
