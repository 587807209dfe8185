"""CSV extracts mapped to FHIR by declarative YAML mapping files, one per source layout.

A mapping names the encoding (``utf-8``, ``gbk``, ``gb18030`` or ``auto``), the delimiter, the
required columns and, per resource, how each FHIR element is filled: from a column (with a type,
date formats and a value map), a constant, or a reference to another resource of the same row.
Rows are read one at a time from the binary file (GBK never puts a newline byte inside a
character), so any file size streams in bounded memory. See docs/ingest.md for the format.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from rhip.errors import InvalidRequest
from rhip.fhir import systems
from rhip.ingest.canonical import epoch, finite_number, fold, to_instant
from rhip.ingest.lines import OVERLONG, read_lines
from rhip.ingest.mappers import MapContext, register_mapper
from rhip.ingest.model import Mapped, MappingError, Record, issue
from rhip.ingest.provenance import stable_id

CONNECTOR = "csv"
_TOKEN = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d+)\])?")


@dataclass
class CsvMapping:
    """A parsed mapping file: shared settings plus one table spec per file name."""

    name: str
    spec: dict[str, Any]
    path: str = ""

    @property
    def encoding(self) -> str:
        return str(self.spec.get("encoding", "auto")).lower()

    @property
    def delimiter(self) -> str:
        return str(self.spec.get("delimiter", ","))

    def table(self, file_name: str) -> dict[str, Any] | None:
        """The table spec for a file (``tables`` keyed by file name, or one top-level table)."""
        tables = self.spec.get("tables")
        if isinstance(tables, dict):
            found = tables.get(file_name)
            return found if isinstance(found, dict) else None
        return self.spec if isinstance(self.spec.get("resources"), list) else None


def load_mapping(name_or_path: str | Path) -> CsvMapping:
    """A mapping by shipped name (``community-centre``) or by path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        text = path.read_text(encoding="utf-8")
        where = str(path.resolve())
    elif path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        raise InvalidRequest(f"mapping file {path} not found")
    else:
        shipped = resources.files("rhip.ingest") / "mappings"
        entry = shipped / f"{name_or_path}.yaml"
        if not entry.is_file():
            names = sorted(f.name[:-5] for f in shipped.iterdir() if f.name.endswith(".yaml"))
            raise InvalidRequest(
                f"unknown CSV mapping '{name_or_path}': shipped mappings are {', '.join(names)}; "
                "for your own layout give the path of its YAML file"
            )
        text = entry.read_text(encoding="utf-8")
        where = ""
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None)
        raise InvalidRequest(
            f"mapping '{name_or_path}' is not valid YAML{at}" + (f": {problem}" if problem else "")
        ) from None
    if not isinstance(spec, dict) or not (
        isinstance(spec.get("resources"), list) or isinstance(spec.get("tables"), dict)
    ):
        raise InvalidRequest(f"mapping '{name_or_path}' has neither 'tables' nor 'resources'")
    problem = _spec_problem(spec)
    if problem:
        raise InvalidRequest(f"mapping '{name_or_path}': {problem}")
    return CsvMapping(str(spec.get("name", path.stem)), spec, where)


def _spec_problem(spec: dict[str, Any]) -> str:
    """What makes a mapping unusable, named by its place in the file ('' when it is usable).

    Checked when the mapping is loaded, so a typo stops the run with its location instead of
    quarantining every row with a mapper error.
    """
    single = "tables" not in spec  # one table given at the top level
    problem = _unknown_key(spec, TOP_KEYS | (TABLE_KEYS if single else set()), "")
    if problem:
        return problem
    encoding = str(spec.get("encoding", "auto")).lower()
    if encoding != "auto":
        try:
            codecs.lookup(encoding)
        except LookupError:
            return f"encoding '{encoding}' is not known (utf-8, gbk, gb18030 or auto)"
    for key in ("date_formats", "datetime_formats"):
        if not _list_of_text(spec.get(key) or []):
            return f'{key} must be a list of formats, e.g. ["%Y-%m-%d"]'
    tables = spec["tables"] if isinstance(spec.get("tables"), dict) else {"": spec}
    for name, table in tables.items():
        where = f"tables.{name}." if name else ""
        if not isinstance(table, dict) or not isinstance(table.get("resources"), list):
            return f"{where}resources must be a list"
        problem = "" if single else _unknown_key(table, TABLE_KEYS, f"tables.{name}")
        if problem:
            return problem
        if not _list_of_text(table.get("required_columns") or []):
            return f"{where}required_columns must be a list of column names, e.g. [档案编号]"
        modified = table.get("modified_column")
        if modified is not None and not (isinstance(modified, str) and modified.strip()):
            return f"{where}modified_column must name a column"
        for i, res in enumerate(table["resources"]):
            problem = _resource_problem(res, f"{where}resources[{i}]")
            if problem:
                return problem
    return ""


def _resource_problem(res: Any, where: str) -> str:
    if not isinstance(res, dict) or not isinstance(res.get("type"), str):
        return f"{where}.type is missing"
    problem = _unknown_key(res, RESOURCE_KEYS, where)
    if problem:
        return problem
    each = res.get("foreach")
    if each is not None and not (isinstance(each, dict) and each.get("column")):
        return f"{where}.foreach needs a column"
    if not _list_of_text(res.get("id_from") or []):
        return f"{where}.id_from must be a list of column names, e.g. [档案编号]"
    if not isinstance(res.get("fields") or {}, dict):
        return f"{where}.fields must map FHIR paths to rules"
    if not isinstance(res.get("identifiers") or [], list):
        return f"{where}.identifiers must be a list"
    for path, rule in (res.get("fields") or {}).items():
        problem = _field_problem(rule) or _unknown_key(rule, RULE_KEYS, f"{where}.fields.{path}")
        if problem:
            return problem if problem.startswith(where) else f"{where}.fields.{path} {problem}"
    for n, ident in enumerate(res.get("identifiers") or []):
        if not (isinstance(ident, dict) and ident.get("column") and ident.get("system")):
            return f"{where}.identifiers[{n}] needs a column and a system"
    return ""


#: Keys a mapping may use at each level; any other is a typo (``id_form`` would give every row
#: one id), refused with its place.
TOP_KEYS = {"name", "encoding", "delimiter", "date_formats", "datetime_formats", "tables"}
TABLE_KEYS = {"required_columns", "modified_column", "resources"}
RESOURCE_KEYS = {"type", "id_from", "when", "identifiers", "fields", "foreach"}
RULE_KEYS = {
    "column", "const", "reference", "id_from", "required", "map", "strict_map", "type", "formats",
    "if_column", "else_path",
}  # fmt: skip


def _unknown_key(spec: dict[str, Any], known: set[str], where: str) -> str:
    unknown = sorted(str(k) for k in spec if k not in known)
    if not unknown:
        return ""
    at = f"{where}: " if where else ""
    return f"{at}unknown key '{unknown[0]}' (known: {', '.join(sorted(known))})"


#: Value types of a ``column`` rule.
FIELD_TYPES = ("string", "date", "datetime", "decimal", "integer", "boolean")


def _field_problem(rule: Any) -> str:
    """What is wrong with one field rule ('' when nothing), worded to follow its path."""
    kinds = [k for k in ("column", "const", "reference") if isinstance(rule, dict) and k in rule]
    if not isinstance(rule, dict) or len(kinds) != 1:
        found = f"keys {', '.join(map(str, rule))}" if isinstance(rule, dict) else repr(rule)
        return f"needs one of column, const or reference (found {found})"
    if "map" in rule and not isinstance(rule["map"], dict):
        return 'map must map source values to FHIR values, e.g. {"1": male}'
    if rule.get("type", "string") not in FIELD_TYPES:
        return f"type '{rule['type']}' is not one of {', '.join(FIELD_TYPES)}"
    if not _list_of_text(rule.get("formats") or []) or not _list_of_text(rule.get("id_from") or []):
        return "formats and id_from must be lists"
    return ""


def _list_of_text(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _decode(line: bytes, encoding: str) -> str:
    if encoding == "auto":
        try:
            return line.decode("utf-8")
        except UnicodeDecodeError:
            return line.decode("gb18030")
    return line.decode(encoding)


def iter_csv(path: Path, mapping: CsvMapping) -> Iterator[Record]:
    """One record per data row; the header and mapping name go into each record's context.

    The header travels as its bytes too (``header_hex``), so the mapper reads it with the
    mapping's encoding at the time it runs: a replay after the encoding was fixed in the mapping
    reads both header and row anew.
    """
    with path.open("rb") as fh:
        lines = read_lines(fh)
        _first, header_line, _size = next(lines, (1, b"", 0))
        if header_line.startswith(b"\xef\xbb\xbf"):
            header_line = header_line[3:]
        if not header_line.strip():
            return
        header_bytes = header_line.rstrip(b"\r\n")
        try:
            header = _header(header_bytes, mapping.encoding, mapping.delimiter)
        except (UnicodeDecodeError, csv.Error):  # each row is quarantined with the reason
            header = []
        context = {
            "mapping": mapping.path or mapping.name,
            "table": path.name,
            "header": header,
            "header_hex": header_bytes.hex(),
            "encoding": mapping.encoding,  # declared: `rhip quarantine show --raw` reads the row with it
        }
        for lineno, line, size in lines:
            if not line.strip():
                continue
            rec = Record(line.rstrip(b"\r\n"), f"{path.name}:{lineno}", context=dict(context))
            if size > len(line):
                rec.context[OVERLONG] = size
            yield rec


def _header(raw: bytes, encoding: str, delimiter: str) -> list[str]:
    """The column names of a header line (folded); UnicodeDecodeError when not in ``encoding``,
    csv.Error when it is not one CSV record (a lone CR in an unquoted name)."""
    return [fold(h) for h in next(csv.reader([_decode(raw, encoding)], delimiter=delimiter))]


def _cells(text: str, delimiter: str, where: str) -> list[str]:
    """The cells of one CSV line; a line the csv module refuses is quarantined as ``csv-syntax``."""
    try:
        return next(csv.reader([text], delimiter=delimiter), [])
    except csv.Error:
        raise MappingError(
            "not a CSV record",
            [issue("csv-syntax", where, "line break or quote inside an unquoted field")],
        ) from None


@lru_cache(maxsize=64)
def _header_of(header_hex: str, encoding: str, delimiter: str) -> tuple[str, ...] | None:
    """The header of a file as the mapping reads it now (None: not in that encoding); cached.

    MappingError (``csv-syntax`` on ``header``) when the decoded line is not one CSV record.
    """
    try:
        text = _decode(bytes.fromhex(header_hex), encoding)
    except UnicodeDecodeError:
        return None
    return tuple(fold(h) for h in _cells(text, delimiter, "header"))


def _row_header(record: Record, mapping: CsvMapping, required: list[str]) -> list[str]:
    """The header a row is read with; an undecodable or mis-decoded header quarantines the row.

    A header that lacks required columns under the mapping's encoding but has them all under
    another one was written in that other encoding: the reason says so (rule ``encoding``, path
    ``header``) instead of naming columns that are in fact there.
    """
    header_hex = record.context.get("header_hex")
    if not isinstance(header_hex, str):
        return list(record.context.get("header") or [])  # rows quarantined before header_hex
    header = _header_of(header_hex, mapping.encoding, mapping.delimiter)
    if header is not None and all(c in header for c in required):
        return list(header)
    for other in ("utf-8", "gb18030"):
        found = _header_of(header_hex, other, mapping.delimiter) if other != mapping.encoding else None
        if found is not None and required and all(c in found for c in required):
            raise MappingError(
                "header in another encoding",
                [issue("encoding", "header", f"header is not {mapping.encoding}; it reads as {other}")],
            )
    if header is None:
        raise MappingError(
            "wrong character encoding", [issue("encoding", "header", f"header is not {mapping.encoding}")]
        )
    return list(header)


def _convert(value: str, rule: dict[str, Any], column: str, mapping: CsvMapping, ctx: MapContext) -> Any:
    value = fold(value)
    if "map" in rule:
        table = {str(k): v for k, v in rule["map"].items()}
        if value not in table:
            if rule.get("strict_map", True):
                raise MappingError("value not in map", [issue("value-map", column, "value has no mapping")])
            return value
        return table[value]
    kind = rule.get("type", "string")
    try:
        if kind == "decimal":
            number = finite_number(value)
            return int(number) if number.is_integer() and "." not in value else number
        if kind == "integer":
            return int(value)
        if kind == "boolean":
            return value.lower() in ("1", "true", "y", "yes", "是")
        if kind in ("date", "datetime"):
            formats = rule.get("formats") or mapping.spec.get(f"{kind}_formats") or []
            for fmt in formats:
                try:
                    parsed = datetime.strptime(value, fmt)
                except ValueError:
                    continue
                return parsed.date().isoformat() if kind == "date" else to_instant(parsed.isoformat(), ctx.tz)
            return to_instant(value, ctx.tz) if kind == "datetime" else _date_only(value)
    except ValueError:
        raise MappingError("bad value", [issue("data-type", column, f"not a valid {kind}")]) from None
    return value


def _date_only(value: str) -> str:
    text = to_instant(value)
    if "T" in text:
        raise ValueError("date expected")
    if len(text) == 10:
        date.fromisoformat(text)  # rejects month 13, day 45
    return text


def _set(target: dict[str, Any], path: str, value: Any) -> None:
    tokens = _TOKEN.findall(path)
    node: Any = target
    for n, (name, index) in enumerate(tokens):
        last = n == len(tokens) - 1
        if index == "":
            if last:
                node[name] = value
            else:
                node = node.setdefault(name, {})
            continue
        items = node.setdefault(name, [])
        i = int(index)
        while len(items) <= i:
            items.append({})
        if last:
            items[i] = value
        else:
            node = items[i]


def map_row(record: Record, ctx: MapContext) -> Mapped:
    """One CSV row -> the resources its table's mapping describes."""
    mapping = ctx.options.get("mapping") or load_mapping(record.context["mapping"])
    table = mapping.table(str(record.context.get("table", "")))
    if table is None:
        raise MappingError(
            "no mapping for this file",
            [
                issue(
                    "unmapped-table",
                    str(record.context.get("table")),
                    f"mapping '{mapping.name}' has no such table",
                )
            ],
        )
    required = [str(c) for c in table.get("required_columns", [])]
    header = _row_header(record, mapping, required)
    try:
        text = _decode(record.raw, mapping.encoding)
    except UnicodeDecodeError:
        raise MappingError(
            "wrong character encoding", [issue("encoding", "", f"row is not {mapping.encoding}")]
        ) from None
    missing = [c for c in required if c not in header]
    if missing:
        raise MappingError(
            "required columns missing",
            [issue("missing-column", c, "column absent from header") for c in missing],
        )
    cells = _cells(text, mapping.delimiter, "")
    if len(cells) != len(header):
        raise MappingError(
            "column count differs from header",
            [issue("column-count", "", f"{len(cells)} cells for {len(header)} columns")],
        )
    row = dict(zip(header, cells, strict=True))
    out: list[dict[str, Any]] = []
    for spec in table["resources"]:
        for item_row in _expand(spec, row):
            res = _resource(spec, item_row, out, mapping, ctx)
            if res is not None:
                out.append(res)
    modified = _modified_time(table, row, mapping, ctx)
    if modified is None:
        return Mapped(out)
    return Mapped(out, event_time=modified, ordered=True)


def _modified_time(
    table: dict[str, Any], row: dict[str, str], mapping: CsvMapping, ctx: MapContext
) -> float | None:
    """Epoch seconds of the row's last-modified time when the table names a ``modified_column``.

    Such rows are ordered: a row older than what is already applied for its resources is stale.
    An absent column or an empty or unreadable cell quarantines the row, since it could not be
    ordered and would otherwise overwrite a newer version unnoticed.
    """
    column = table.get("modified_column")
    if not column:
        return None
    if column not in row:
        raise MappingError(
            "last-modified column missing", [issue("missing-column", column, "column absent from header")]
        )
    raw = row[column]
    if not raw.strip():
        raise MappingError("last-modified time empty", [issue("required", column, "empty cell")])
    moment = epoch(_convert(raw, {"type": "datetime"}, column, mapping, ctx), ctx.tz)
    if moment is None:
        raise MappingError("bad value", [issue("data-type", column, "not a valid datetime")])
    return moment


def _expand(spec: dict[str, Any], row: dict[str, str]) -> list[dict[str, str]]:
    """``foreach``: one row per item of a split column (parallel columns split alike)."""
    each = spec.get("foreach")
    if not each:
        return [row]
    sep = each.get("split", ";")
    columns = [each["column"], *each.get("also", [])]
    parts = {c: row.get(c, "").split(sep) for c in columns}
    out = []
    for i, value in enumerate(parts[each["column"]]):
        if not value.strip():
            continue
        item = dict(row)
        for c in columns:
            item[c] = parts[c][i] if i < len(parts[c]) else ""
        item["#"] = str(i)
        out.append(item)
    return out


def _token(value: str, facility: str) -> str:
    """Constants may name systems: ``{system:NAME}``, ``{card:mrn}``, ``{local:drug}``, ``{facility}``."""
    if value.startswith("{system:") and value.endswith("}"):
        return str(getattr(systems, value[8:-1]))
    if value.startswith("{card:") and value.endswith("}"):
        return systems.facility_card_system(facility, value[6:-1])
    if value.startswith("{local:") and value.endswith("}"):
        return systems.local_code_system(facility, value[7:-1])
    return value.replace("{facility}", facility)


def _resource(
    spec: dict[str, Any],
    row: dict[str, str],
    done: list[dict[str, Any]],
    mapping: CsvMapping,
    ctx: MapContext,
) -> dict[str, Any] | None:
    when = spec.get("when")
    if when and not row.get(when, "").strip():
        return None
    facility = ctx.source.facility
    res: dict[str, Any] = {"resourceType": spec["type"]}
    res["id"] = stable_id(facility, spec["type"], *[str(row.get(c, c)) for c in spec.get("id_from", [])])
    idents = []
    for ident in spec.get("identifiers", []):
        value = row.get(ident["column"], "").strip()
        if value:
            entry: dict[str, Any] = {"system": _token(ident["system"], facility), "value": value}
            if ident.get("type"):
                entry["type"] = {"coding": [{"system": systems.IDENTIFIER_TYPE, "code": ident["type"]}]}
            idents.append(entry)
    if idents:
        res["identifier"] = idents
    for path, rule in (spec.get("fields") or {}).items():
        if rule.get("if_column") and not row.get(rule["if_column"], "").strip():
            continue
        if "const" in rule:
            value = _token(rule["const"], facility) if isinstance(rule["const"], str) else rule["const"]
        elif "reference" in rule:
            keys = [row.get(c, "") for c in rule.get("id_from", [])]
            if not all(k.strip() for k in keys):
                continue
            value = f"{rule['reference']}/{stable_id(facility, rule['reference'], *keys)}"
        else:
            column = rule["column"]
            raw = row.get(column, "")
            if not raw.strip():
                if rule.get("required"):
                    raise MappingError("required value empty", [issue("required", column, "empty cell")])
                continue
            try:
                value = _convert(raw, rule, column, mapping, ctx)
            except MappingError:
                if not rule.get("else_path"):
                    raise
                _set(res, rule["else_path"], fold(raw))
                continue
        _set(res, path, value)
    qty = res.get("valueQuantity")
    if isinstance(qty, dict) and "value" not in qty:
        del res["valueQuantity"]  # a text result fell back to valueString; its unit has nothing to qualify
    return res


register_mapper(CONNECTOR, map_row)
