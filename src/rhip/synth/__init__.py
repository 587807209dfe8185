"""Synthetic region generator with ground truth (``rhip generate``).

Builds a Chinese city — districts, facilities, residents with valid citizen IDs, households, cards,
health histories, notifiable infections with injected outbreaks, wearable streams with injected
deteriorations, dirty duplicate identities and claims anomalies — and writes it in the formats the
facilities emit (FHIR, HL7 v2.5, CSV, DICOM, device JSON) plus ground-truth files.
"""

from rhip.synth.engine import DEFAULT_END, DEFAULT_FORMATS, Manifest, generate
from rhip.synth.writers import WRITERS, Writer, register_writer

__all__ = ["DEFAULT_END", "DEFAULT_FORMATS", "WRITERS", "Manifest", "Writer", "generate", "register_writer"]
