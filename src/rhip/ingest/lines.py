"""Lines of a file read through a bounded buffer: a line longer than the limit is never held whole.

NDJSON, CSV and device ``.jsonl`` files are streamed line by line; a file with no line break
(a binary file under the wrong name, a corrupt export, a 2 GB bundle saved as ``.ndjson``) would
otherwise be read into memory as one "line". A line longer than :data:`MAX_LINE` becomes one
record holding its first :data:`KEPT` bytes, marked with its full length in the record context
(:data:`OVERLONG`); the pipeline quarantines it with rule ``size-limit`` and goes on with the next.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

#: Longest line read whole (64 MiB: far above any single FHIR resource, HL7 segment or CSV row).
MAX_LINE = 64 * 1024 * 1024
#: Bytes of an over-long line kept for quarantine.
KEPT = 64 * 1024
#: Record context key: the full length in bytes of a line that was cut to its first KEPT bytes.
OVERLONG = "overlong_bytes"


def read_lines(fh: BinaryIO, limit: int = MAX_LINE) -> Iterator[tuple[int, bytes, int]]:
    """(line number, bytes, length) of each line; an over-long line gives its first KEPT bytes.

    The length is that of the bytes given, or for an over-long line its full length without the
    line ending.

    The rest of an over-long line is read in ``limit``-sized pieces and dropped, so memory stays
    bounded by ``limit`` whatever the file holds.
    """
    lineno = 0
    while line := fh.readline(limit):
        lineno += 1
        if len(line) < limit or line.endswith(b"\n"):
            yield lineno, line, len(line)
            continue
        size, head = len(line), line[:KEPT]
        del line
        while piece := fh.readline(limit):
            size += len(piece)
            if piece.endswith(b"\n"):
                size -= len(piece) - len(piece.rstrip(b"\r\n"))  # the line, not its ending
                break
        yield lineno, head, size


def size_reason(size: int) -> dict[str, str]:
    """The quarantine reason of a line cut to its first KEPT bytes."""
    return {
        "rule": "size-limit",
        "path": "",
        "message": f"line of {size} bytes exceeds the {MAX_LINE}-byte limit; its first {KEPT} bytes are kept",
        "severity": "error",
    }
