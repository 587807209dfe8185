"""HL7 v2.x parsing, batching and acknowledgements (the transport-independent part).

Parsing uses python-hl7 (``hl7`` on PyPI): it is lenient about what real senders produce (custom
delimiters, Z-segments, segments unknown to a version table) and fast enough for the MLLP target,
which the strict, table-driven hl7apy is not (10-100 ms per message on the reference samples).
Segment separators CR, LF and CRLF and a leading BOM are accepted; FHS/BHS batch envelopes are
unwrapped into their messages.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hl7

from rhip.ingest.lines import KEPT, MAX_LINE, OVERLONG
from rhip.ingest.model import MappingError, Record, issue

CONNECTOR = "hl7v2"
_SEGMENT_ID = re.compile(r"^[A-Z][A-Z0-9]{2}$")
_ENVELOPE = ("FHS", "BHS", "BTS", "FTS")
#: Encodings tried in order when the bytes are not declared (MSH-18 decides when present).
_CHARSETS = {
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "GB 18030-2000": "gb18030",
    "GB18030": "gb18030",
    "GBK": "gbk",
    "ASCII": "ascii",
    "8859/1": "latin-1",
}


def declared_charset(raw: bytes) -> str | None:
    """The Python codec of the message's MSH-18 character set, None when it names none we know."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    first = raw.split(b"\r", 1)[0].split(b"\n", 1)[0]
    if len(first) > 8 and first[:3] == b"MSH":
        fields = first.split(first[3:4])
        if len(fields) > 17:
            return _CHARSETS.get(fields[17].decode("ascii", "replace").strip().upper())
    return None


def decode(raw: bytes) -> str:
    """Text of a message: BOM dropped, MSH-18 charset honoured, else UTF-8 then GB18030."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    codec = declared_charset(raw)
    if codec:
        try:
            return raw.decode(codec)
        except UnicodeDecodeError:
            pass
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        try:
            return raw.decode("gb18030")
        except UnicodeDecodeError:
            raise MappingError(
                "message is neither UTF-8 nor GB18030", [issue("encoding", "MSH-18", "undecodable bytes")]
            ) from None


def normalise(text: str) -> str:
    """Segments separated by CR only, blank lines and surrounding whitespace removed."""
    lines = re.split(r"\r\n|\r|\n", text.strip("\ufeff \t\r\n\x0b\x1c"))
    return "\r".join(line for line in lines if line.strip())


_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_EDGE = b" \t\x0b\x1c"
_ENVELOPE_BYTES = tuple(e.encode() for e in _ENVELOPE)
_READ_SIZE = 1 << 20


def _segment_lines(blocks: Iterable[bytes], limit: int = MAX_LINE) -> Iterator[tuple[int, bytes, int]]:
    """(line number, bytes, full length) of every segment of a byte stream cut anywhere.

    Segments end with CR, LF or CRLF. A CR at the end of a block is held back until the next
    block shows whether an LF follows, so a CRLF split across two reads is one line break. A
    segment longer than ``limit`` is not held: its first KEPT bytes stand for it, with its length.
    Blocks without a line break are collected, not concatenated, so a long line costs no copies.
    """
    pieces: list[bytes] = []  # the unfinished segment, in the blocks it came in
    held, head, dropped, line = 0, b"", 0, 1
    for block in blocks:
        if b"\r" not in block and b"\n" not in block and not (pieces and pieces[-1].endswith(b"\r")):
            if dropped:
                dropped += len(block)
                continue
            pieces.append(block)
            held += len(block)
        else:
            data = b"".join(pieces) + block
            cut = len(data) - 1 if data.endswith(b"\r") else len(data)
            parts = _LINE_BREAK.split(data[:cut])
            rest = parts.pop() + data[cut:]
            pieces, held = [rest], len(rest)
            for part in parts:
                yield (line, head, dropped + len(part)) if dropped else (line, part, len(part))
                head, dropped, line = b"", 0, line + 1
        if held > limit:  # no line break for a whole limit: keep the head, drop the rest
            rest = b"".join(pieces)
            keep = b"\r" if rest.endswith(b"\r") else b""
            head, dropped = rest[:KEPT], held - len(keep)
            pieces, held = [keep] if keep else [], len(keep)
    for part in _LINE_BREAK.split(b"".join(pieces)):
        yield (line, head, dropped + len(part)) if dropped else (line, part, len(part))
        head, dropped, line = b"", 0, line + 1


def message_bytes(blocks: Iterable[bytes]) -> Iterator[tuple[int, bytes, int]]:
    """(line of its MSH, original bytes, over-long size) of each message in a byte stream.

    Segments are joined by CR. The bytes stay as sent, undecoded: each message is decoded on its
    own (its MSH-18 decides), so a file mixing encodings, or holding one message with broken
    bytes, loses only that one. Blank lines, a BOM, MLLP framing bytes and FHS/BHS/BTS/FTS
    envelopes are dropped. The third value is 0, or the length of a segment longer than the line
    limit of :mod:`rhip.ingest.lines` (the message then holds only that segment's first bytes).
    """
    first, overlong = 0, 0
    current: list[bytes] = []
    for line, seg, size in _segment_lines(blocks):
        seg = seg.strip(_EDGE)
        if line == 1 and seg.startswith(b"\xef\xbb\xbf"):
            seg = seg[3:].strip(_EDGE)
        if not seg.strip() or seg[:3] in _ENVELOPE_BYTES:
            continue
        if seg.startswith(b"MSH") or not current:
            if current:
                yield first, b"\r".join(current), overlong
            first, overlong, current = line, 0, [seg]
        else:
            current.append(seg)
        if size > MAX_LINE:
            overlong = max(overlong, size)
    if current:
        yield first, b"\r".join(current), overlong


def _blocks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while block := fh.read(_READ_SIZE):
            yield block


def iter_hl7_file(path: Path) -> Iterator[Record]:
    """One record per message of an HL7 file, streamed (bounded memory whatever the file size).

    Each record keeps the message's original bytes and names its file and the line of its MSH;
    its key is MSH-10 when the message can be decoded (else its content hash).
    """
    for line, raw, overlong in message_bytes(_blocks(path)):
        try:
            key = control_id(normalise(decode(raw)))
        except MappingError:
            key = None
        record = Record(raw, f"{path.name}:{line}", key=key)
        if overlong:
            record.context[OVERLONG] = overlong
        yield record


def file_sender(path: Path) -> str:
    """MSH-4 (sending facility) of the first readable message of a file, '' when there is none."""
    for _line, raw, _overlong in message_bytes(_blocks(path)):
        try:
            return header_field(normalise(decode(raw)), 4)
        except MappingError:
            continue
    return ""


def control_id(message: str) -> str | None:
    """MSH-10 read without a full parse (None when the header is unreadable)."""
    if not message.startswith("MSH") or len(message) < 8:
        return None
    sep = message[3]
    fields = message.split("\r", 1)[0].split(sep)
    return fields[9].strip() or None if len(fields) > 9 else None


def header_field(message: str, index: int) -> str:
    """MSH-n (1-based as in the standard, component 1) read without a full parse."""
    if not message.startswith("MSH") or len(message) < 8:
        return ""
    sep = message[3]
    comp = message[4]
    fields = message.split("\r", 1)[0].split(sep)
    pos = index - 1
    return fields[pos].split(comp)[0].strip() if len(fields) > pos else ""


def _lean(base: type, level: int) -> Any:
    """python-hl7's container class ``base`` with a plain constructor: the same class (a
    subclass), list and attributes, without the generic constructor's chain of ``super()``
    calls and assertions (the parser always passes consistent separators). python-hl7 builds
    about a hundred containers per message; this takes ≈ 12 % off its parse (docs/benchmarks.md).
    """

    def __init__(
        self: Any,
        separator: str | None = None,
        sequence: Iterable[Any] = (),
        esc: str = "\\",
        separators: str = "\r|~^&",
        factory: Any = None,
    ) -> None:
        list.__init__(self, sequence)
        self.separator = separators[level]
        self.esc = esc
        self.separators = separators
        self.factory = factory if factory is not None else Containers

    members = {"__init__": __init__, "__module__": __name__, "__doc__": base.__doc__}
    return type(base.__name__, (base,), members)


class Containers(hl7.Factory):
    """The containers :func:`parse` has python-hl7 build (its documented ``factory`` hook):
    python-hl7's own classes, constructed more cheaply."""

    create_message = _lean(hl7.Message, 0)
    create_segment = _lean(hl7.Segment, 1)
    create_field = _lean(hl7.Field, 2)
    create_repetition = _lean(hl7.Repetition, 3)
    create_component = _lean(hl7.Component, 4)


try:  # python-hl7's parser itself (pinned in pyproject.toml), to reuse its parse plans
    from hl7.parser import _ParsePlan, _split, create_parse_plan
except ImportError:  # pragma: no cover - another python-hl7: its public parse, plans and all
    _ParsePlan = None

#: Parse plans by (separators, escape character), each reused for every message sent with them.
_PLANS: dict[tuple[str, str], Any] = {}
_MAX_PLANS = 64

if _ParsePlan is not None:

    class _Plan(_ParsePlan):
        """python-hl7's parse plan with each level built once.

        python-hl7 builds the next level's plan again for every part it splits (about a hundred
        per message) and finds the level's separators in the separator string each time it asks
        whether a part needs splitting (one search per separator); a plan never changes once
        built, so this one keeps its next level, looks for any of its separators in one search,
        and builds its containers with positional arguments (docs/benchmarks.md). What is
        parsed, and how, is python-hl7's own ``_split``.
        """

        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            rest = self.separators[self.separators.find(self.separator) :]
            self._search = re.compile("[" + "".join(map(re.escape, rest)) + "]").search
            self._next: Any = False
            self._make = self.containers[0]

        def next(self) -> Any:
            if self._next is False:
                self._next = super().next()
            return self._next

        def applies(self, text: str) -> bool:
            return self._search(text) is not None

        def container(self, data: list[Any]) -> Any:
            return self._make(None, data, self.esc, self.separators, self.factory)


def _python_hl7_parse(text: str) -> Any:
    """``hl7.parse(text, factory=Containers)``: python-hl7's parse of the message, its plans reused."""
    if _ParsePlan is None:
        return hl7.parse(text, factory=Containers)
    strmsg = text.strip()  # as hl7.parse does
    plan = create_parse_plan(strmsg, Containers)
    key = (plan.separators, plan.esc)
    cached = _PLANS.get(key)
    if cached is None:
        cached = _Plan(plan.separator, plan.separators, plan.containers, plan.esc, plan.factory)
        if len(_PLANS) < _MAX_PLANS:
            _PLANS[key] = cached
    return _split(strmsg, cached)


@dataclass
class Parsed:
    """A parsed message and the values every mapper needs from its header."""

    message: Any
    text: str
    msg_type: str
    event: str
    control_id: str
    version: str
    timestamp: str
    sending_facility: str
    by_id: dict[str, list[Any]] = field(default_factory=dict, repr=False)

    def segments(self, name: str) -> list[Any]:
        """All segments with this id, in order (as :func:`segments`, from an index built once
        per message: the mappers look segments up several times, each a scan of the message)."""
        return self.by_id.get(name, [])


def parse(text: str) -> Parsed:
    """Parse one message; MappingError names the segment and rule on failure."""
    if not text.startswith("MSH"):
        raise MappingError(
            "message does not start with MSH", [issue("msh-missing", "MSH", "first segment is not MSH")]
        )
    if len(text) < 9 or text[3].isalnum() or len(set(text[3:8])) < 5:
        raise MappingError(
            "MSH delimiters are invalid", [issue("delimiters", "MSH-1", "bad field/encoding characters")]
        )
    for n, seg in enumerate(text.split("\r"), 1):
        if not _SEGMENT_ID.match(seg[:3]) or (len(seg) > 3 and seg[3] != text[3]):
            raise MappingError(
                "broken segment", [issue("segment-syntax", f"segment {n}", "segment id or separator invalid")]
            )
    try:
        message = _python_hl7_parse(text)
    except Exception as exc:
        raise MappingError("HL7 parse failed", [issue("hl7-syntax", "MSH", type(exc).__name__)]) from None
    by_id: dict[str, list[Any]] = {}
    for seg in message:
        # the id was checked above (three letters or digits, no separator): python-hl7 holds it
        # as the field's one string
        by_id.setdefault(seg[0][0], []).append(seg)
    msh = by_id["MSH"][0]  # the first segment (checked above), as message.segment("MSH") finds it
    msg_type = _get(msh, 9, 1)
    event = _get(msh, 9, 2)
    if not msg_type:
        raise MappingError(
            "MSH-9 message type missing", [issue("required", "MSH-9", "message type is empty")]
        )
    return Parsed(
        message, text, msg_type, event, _get(msh, 10), _get(msh, 12), _get(msh, 7), _get(msh, 4), by_id
    )


def _get(segment: Any, field: int, comp: int = 1, rep: int = 1, sub: int = 1) -> str:
    """Component value of a field (1-based, MSH numbered as in the standard), '' when absent.

    Read from python-hl7's parse tree as it stands: joining a field back into text and splitting
    it again (what this did before) cost more than the look-up (docs/benchmarks.md).
    """
    if field >= len(segment):
        return ""
    if field <= 2:  # MSH-1 and MSH-2 hold the separators themselves: read as text
        return _get_text(segment, field, comp, rep, sub)
    value = _part(_part(_part(_item(segment, field), rep), comp), sub)
    return value.strip() if value is not None else ""


get = _get


def _part(node: Any, index: int) -> Any:
    """Part ``index`` (1-based) of a parsed field, repetition or component; None when absent
    (also below an absent part).

    python-hl7 splits a part only when it holds a separator of its own or a lower level; an
    unsplit part is a container of its one string, and a string stands for a list of itself.
    So the parts of each level are exactly what splitting the text by that level's separator
    gives.
    """
    if node is None or node.__class__ is str:
        return node if index == 1 else None
    return _item(node, index - 1) if index <= len(node) else None


#: An element of a python-hl7 container by position: what its ``__getitem__`` does for an int
#: index, without the Python-level call (it only adds slices and, for messages, segment names).
_item = list.__getitem__


def _get_text(segment: Any, field: int, comp: int, rep: int, sub: int) -> str:
    """:func:`_get` by splitting the field's text (the definition the tree look-up follows)."""
    text = _field_text(segment, field)
    if not text:
        return ""
    seps = segment.separators
    reps = text.split(seps[2])
    if rep > len(reps):
        return ""
    comps = reps[rep - 1].split(seps[3])
    if comp > len(comps):
        return ""
    subs = comps[comp - 1].split(seps[4])
    return subs[sub - 1].strip() if sub <= len(subs) else ""


def _field_text(segment: Any, field: int) -> str:
    """A field's text as sent ('' when absent). A field without separators is parsed into one
    string, which is its text: only a field with repetitions or components is joined back."""
    if field >= len(segment):
        return ""
    value = segment[field]
    if len(value) == 1 and isinstance(value[0], str):
        return value[0]
    return str(value)


def field_reps(segment: Any, field: int) -> list[list[str]]:
    """Each non-empty repetition of a field as its list of components (a component with
    subcomponents as its text), read from the parse tree as :func:`_get` is."""
    if field >= len(segment):
        return []
    if field <= 2:
        return _field_reps_text(segment, field)
    reps: list[list[str]] = []
    for part in _item(segment, field):
        if part.__class__ is not str and (len(part) > 1 or part[0].__class__ is not str):
            reps.append([_text(c) for c in part])  # split into components: never empty
        else:
            text = _text(part)
            if text:
                reps.append([text])
    return reps


def _text(node: Any) -> str:
    """The text of a parsed part: an unsplit part is its string, or a container of just that."""
    if node.__class__ is str:
        return str(node)
    if len(node) == 1 and node[0].__class__ is str:
        return str(node[0])
    return str(node)


def _field_reps_text(segment: Any, field: int) -> list[list[str]]:
    """:func:`field_reps` by splitting the field's text."""
    text = _field_text(segment, field)
    seps = segment.separators
    if not text:
        return []
    return [r.split(seps[3]) for r in text.split(seps[2]) if r]


def segments(message: Any, name: str) -> list[Any]:
    """All segments with this id, in order."""
    return [s for s in message if str(s[0]) == name]


# --- acknowledgements ---------------------------------------------------------------------------
_ERR_CODES = {
    "unsupported-message-type": ("200", "Unsupported message type"),
    "unsupported-event": ("201", "Unsupported event code"),
    "msh-missing": ("100", "Segment sequence error"),
    "segment-syntax": ("100", "Segment sequence error"),
    "delimiters": ("102", "Data type error"),
    "hl7-syntax": ("102", "Data type error"),
    "encoding": ("102", "Data type error"),
    "required": ("101", "Required field missing"),
    "datetime-format": ("102", "Data type error"),
    "data-type": ("102", "Data type error"),
    "value-set": ("103", "Table value not found"),
}
_REJECT_RULES = {"unsupported-message-type", "unsupported-event", "msh-missing", "delimiters", "encoding"}


def _esc(text: str) -> str:
    return (
        text.replace("\\", "\\E\\")
        .replace("|", "\\F\\")
        .replace("^", "\\S\\")
        .replace("&", "\\T\\")
        .replace("~", "\\R\\")
        .replace("\r", " ")
    )


def ack_code(outcome: str, reasons: list[dict[str, str]]) -> str:
    """AA for stored/duplicate/stale, AR for a rejected header or type, AE for content errors.

    A duplicate with reasons repeats a quarantined message (resent): it is answered as that one.
    """
    if outcome != "quarantined" and not (outcome == "duplicate" and reasons):
        return "AA"
    if any(r.get("rule") in _REJECT_RULES for r in reasons):
        return "AR"
    return "AE"


def ack_time() -> str:
    """The current time as an ACK's MSH-7 (UTC)."""
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S+0000")


def build_ack(
    message: str, code: str, reasons: list[dict[str, str]] | None = None, *, now: str | None = None
) -> str:
    """An ACK for ``message`` (which may be unparseable) with one ERR segment per reason.

    ``now``: its MSH-7, from :func:`ack_time` (default: the current time), given by a caller
    that answers many messages at once.
    """
    sep = message[3] if message.startswith("MSH") and len(message) > 8 and not message[3].isalnum() else "|"
    fields = message.split("\r", 1)[0].split(sep) if message.startswith("MSH") else []

    def f(i: int) -> str:
        return _esc(fields[i - 1]) if len(fields) >= i and sep == "|" else ""

    now = now or ack_time()
    ctrl = f(10)
    kind = fields[8].split(message[4]) if len(fields) > 8 and sep == "|" and len(message) > 4 else []
    event = _esc(kind[1]) if len(kind) > 1 else ""  # MSH-9.2, read before escaping
    version = f(12) or "2.5"
    segs = [
        f"MSH|^~\\&|RHIP|RHIP|{f(3)}|{f(4)}|{now}||ACK^{event}^ACK|ACK{ctrl or now}|P|{version}",
        f"MSA|{code}|{ctrl}",
    ]
    for r in reasons or []:
        err, text = _ERR_CODES.get(r.get("rule", ""), ("207", "Application internal error"))
        location = _esc(r.get("path", "")).replace(" ", "")
        detail = _esc(f"{r.get('rule', '')}: {r.get('message', '')}")[:200]
        sev = "W" if r.get("severity") == "warning" else "E"
        segs.append(f"ERR||{location}|{err}^{text}^HL70357|{sev}||||{detail}")
    return "\r".join(segs) + "\r"
