"""Checks of primitive values shared by every layer that reads numbers out of text."""

from __future__ import annotations


def is_ascii_digits(text: str) -> bool:
    """True for a non-empty run of 0-9 only.

    ``str.isdigit()`` alone also admits superscripts ("¹", which ``int()`` refuses: a 500 where a
    400 belongs) and other scripts' digits ("٣", which ``int()`` reads as 3); FHIR's integers,
    versions, HL7 dates and GB 11643 numbers are ASCII.
    """
    return text.isascii() and text.isdigit()
