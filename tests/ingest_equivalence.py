"""Dump what the ingest hot path derives from a reference corpus, to prove an optimisation changes nothing.

For every resource of the corpus (the bulk benchmark's Patients and Observations, the FHIR R4
examples, the Synthea bundles and bulk NDJSON under tests/data, plus edge cases of dates and
strings) it writes, one line each: the canonicalised body and its findings, the validation issues,
the index rows (``index_tuples``), the writer's rows of the field-protected body
(``tuple_rows_for``), the protected body (tokens masked), what the pipeline's preparer makes of
the resource as an NDJSON line (mapped body, or quarantine reasons) and every quality rule's
outcome, then the quality collector's tallies. Run it before and after a change and compare the files::

    .venv/bin/python tests/ingest_equivalence.py /tmp/before.txt
    ... change ...
    .venv/bin/python tests/ingest_equivalence.py /tmp/after.txt --compare /tmp/before.txt

Values are written with ``repr`` so that a float or a tuple/list difference shows.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
#: Fixed keys, so that pseudonyms (and therefore the protected bodies' index rows) repeat run to run.
_KEYS = {"sm4": "00112233445566778899aabbccddeeff", "hmac": "11" * 32}
_NOW = 1_795_000_000.0  # the quality rules' "now": fixed, so "not in the future" repeats


def _benchmark_resources(n: int) -> Iterator[dict[str, Any]]:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from ingest_ndjson import _resource

    for i in range(n):
        yield _resource(i)


def _bundle_entries(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield doc
    if doc.get("resourceType") == "Bundle":
        for entry in doc.get("entry") or []:
            res = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(res, dict):
                yield from _bundle_entries(res)


def _sample_resources() -> Iterator[dict[str, Any]]:
    for path in sorted((DATA / "fhir-r4-examples").glob("*.json")):
        yield from _bundle_entries(orjson.loads(path.read_bytes()))
    for path in sorted((DATA / "synthea-r4").glob("*.json")):
        yield from _bundle_entries(orjson.loads(path.read_bytes()))
    for path in sorted((DATA / "synthea-bulk-ndjson").glob("*.ndjson")):
        for line in path.read_bytes().splitlines():
            if line.strip():
                yield orjson.loads(line)


def _edge_cases() -> Iterator[dict[str, Any]]:
    """Dates of every precision and zone form, strings that normalise in unusual ways, tokens."""
    dates = [
        "2020",
        "2020-02",
        "2020-12",
        "9999",
        "9999-12",
        "2020-02-29",
        "2021-02-29",
        "2020-03-08T02:30:00",
        "2020-03-08T02:30",
        "2020-11-01T01:30:00-05:00",
        "2020-06-01T10:00:00Z",
        "2020-06-01T10:00:05.123Z",
        "2020-06-01T10:00:05.1+08:00",
        "2020-06-01T10:00:05.123456789+05:45",
        "2020-06-01T23:59:59.999-12:00",
        "0001-01-01",
        " 2020-01-01 ",
        "2020-13-01",
        "20200101",
        "2020-06-01T10:00:60Z",
        "2020-06-01T24:00:00Z",
    ]
    strings = [
        "Müller",
        "ＺＨＡＮＧ　ＳＡＮ",
        "Ångström ﬁ ß",
        "e\u0301\u0301",
        "\U0001d400\U0001d401 \U000e0100",
        "张三",
        "x" * 600,
        "é" * 600,
        "心率" + "y" * 200,
        "",
    ]
    for i, d in enumerate(dates):
        yield {
            "resourceType": "Observation",
            "id": f"edge-date-{i}",
            "status": "final",
            "code": {"text": strings[i % len(strings)]},
            "effectiveDateTime": d,
            "issued": d,
            "valuePeriod": {"start": d, "end": dates[(i + 3) % len(dates)]},
        }
        yield {
            "resourceType": "Encounter",
            "id": f"edge-enc-{i}",
            "status": "finished",
            "class": {"code": "AMB"},
            "period": {"start": d},
        }
    for i, s in enumerate(strings):
        yield {
            "resourceType": "Patient",
            "id": f"edge-str-{i}",
            "name": [{"family": s, "given": [s, "Ann"], "text": s}],
            "address": [{"line": [s], "city": s}],
            "birthDate": dates[i % len(dates)],
            "identifier": [
                {"system": "urn:oid:2.16.156.10011.1.1", "value": "11010519491231002X"},
                {"system": "http://example.org/mrn", "value": "sm4:v1:not-a-real-token"},
            ],
            "telecom": [
                {"system": "phone", "value": "+86 138-0000-0000"},
                {"system": "email", "value": "a@example.org"},
                {"system": "sms", "value": "sm4:v9:kept-as-it-is"},
            ],
            "contact": [{"telecom": [{"system": "phone", "value": "010-1234567"}]}],
        }
    # malformed shapes: indexing must skip what it cannot read, exactly as before
    yield {
        "resourceType": "Observation",
        "id": "edge-bad-1",
        "component": ["bad", {"code": {"coding": [{"code": "c"}]}, "valueQuantity": {"value": 1}}, None, 5],
        "code": "not-an-object",
        "valueQuantity": [{"value": 3}],
        "subject": ["Patient/1"],
        "category": {"coding": "x"},
        "effectiveDateTime": 5,
        "meta": {"profile": "x", "tag": [None, {"code": 1}]},
    }
    yield {
        "resourceType": "Patient",
        "id": "edge-bad-2",
        "name": "str",
        "address": [None, "x", {"line": ["a", None, 3]}],
        "telecom": [{"system": "phone"}, "x"],
        "identifier": {"value": "v"},
    }
    yield {
        "resourceType": "RelatedPerson",
        "id": "edge-rp",
        "patient": {"reference": "Patient/edge-str-0"},
        "telecom": [{"system": "phone", "value": "13900000000"}],
        "identifier": [{"value": "x"}],
    }
    yield {
        "resourceType": "Practitioner",
        "id": "edge-pr",
        "telecom": [{"system": "phone", "value": "1"}],
        "name": [{"family": "李", "given": ["四"]}],
    }


def corpus(n_bench: int) -> Iterator[dict[str, Any]]:
    """Every resource of the reference corpus, as parsed JSON."""
    yield from _benchmark_resources(n_bench)
    yield from _sample_resources()
    yield from _edge_cases()


def _crypt(keys_dir: Path) -> Any:
    from rhip.security.crypto import FieldCipher
    from rhip.security.keys import KeyRing
    from rhip.store.fieldcrypt import FieldCrypt

    for kind, key in _KEYS.items():
        (keys_dir / "keys" / kind).mkdir(parents=True, exist_ok=True)
        (keys_dir / "keys" / kind / "v1.key").write_text(key)
    return FieldCrypt(FieldCipher(KeyRing(keys_dir)))


def _masked(value: Any) -> Any:
    """The value with SM4 tokens (random nonces) replaced by their key version."""
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    if isinstance(value, str) and value.startswith("sm4:v") and value.count(":") == 2:
        return value.rsplit(":", 1)[0] + ":<token>"
    return value


def _revealed_same(crypt: Any, protected: dict[str, Any], plain: dict[str, Any]) -> bool | str:
    """Whether revealing the protected body gives the plain one back (or why it cannot)."""
    from rhip.errors import FieldKeyError

    try:
        return bool(crypt.reveal(protected) == plain)
    except FieldKeyError as exc:
        return str(exc).split(":", 1)[0]


def _map_record(preparer: Any, raw: dict[str, Any], n: int) -> tuple[Any, ...]:
    """What the pipeline's preparer makes of the resource as an NDJSON line: body, reasons, warnings."""
    from rhip.ingest.fhir_files import map_ndjson
    from rhip.ingest.mappers import MapContext
    from rhip.ingest.model import Record, SourceInfo

    ctx = MapContext(
        SourceInfo(facility="EQ", connector="fhir-ndjson"),
        preparer.canonicaliser.tz,
        preparer.canonicaliser.translator,
    )
    mapped, reasons = preparer.map_record(
        Record(orjson.dumps(raw), f"eq.ndjson:{n}"), f"k{n}", ctx, map_ndjson
    )
    if mapped is None:
        return (None, reasons)
    return ([orjson.dumps(r) for r in mapped.resources], reasons, mapped.warnings)


def dump(out: Path, n_bench: int) -> int:
    """Write the dump of the corpus to ``out``; returns the number of resources."""
    from rhip.fhir.validation import validate_resource
    from rhip.ingest.canonical import Canonicaliser, ConceptTranslator
    from rhip.ingest.model import Mapped, Record, SourceInfo
    from rhip.ingest.pipeline import RecordPreparer
    from rhip.ingest.validate import ResourceValidator
    from rhip.quality.collector import _Tallies
    from rhip.quality.rules import RULES, RuleContext
    from rhip.store.index_extract import index_tuples
    from rhip.store.indexing import rows_for, tuple_rows_for

    translator = ConceptTranslator(
        [
            {
                "group": [
                    {
                        "source": "http://example.org/local",
                        "target": "http://loinc.org",
                        "element": [{"code": "HR", "target": [{"code": "8867-4", "display": "Heart rate"}]}],
                    }
                ]
            }
        ]
    )
    canon, validator = Canonicaliser(translator), ResourceValidator()
    preparer = RecordPreparer(translator, "Asia/Shanghai", validator)
    tallies = _Tallies("Asia/Shanghai")
    source = SourceInfo(facility="EQ", connector="fhir-ndjson")
    n = 0
    with tempfile.TemporaryDirectory() as keys, out.open("w", encoding="utf-8") as fh:
        crypt = _crypt(Path(keys))

        def w(kind: str, value: Any) -> None:
            fh.write(f"{n}\t{kind}\t{value!r}\n")

        for raw in corpus(n_bench):
            res = copy.deepcopy(raw)
            w("raw-index", index_tuples(res))
            w("canonical-findings", canon.apply(res))
            w("canonical-body", orjson.dumps(res))
            w("validation", validate_resource(res))
            errors = validator.errors(res)
            w("errors", errors)
            w("index", index_tuples(res))
            protected = crypt.protect(res)
            w("protected-body", orjson.dumps(_masked(protected)))
            w("revealed-same", _revealed_same(crypt, protected, res))
            w("writer-rows", tuple_rows_for(protected))
            w("rows-for", rows_for(protected))
            w("map-record", _map_record(preparer, raw, n))
            n += 1
            if errors:  # quarantined: the quality rules never see it
                continue
            ctx = RuleContext(now=_NOW, patients=tallies.ctx.patients)
            w(
                "rules",
                [
                    (r.id, r.check(res, ctx))
                    for r in RULES.values()
                    if res.get("resourceType") in r.resource_types
                ],
            )
            record = Record(raw=orjson.dumps(raw), position=str(n), source=source)
            event = 1_790_000_000.0 + (n % 1000) * 3_600.0
            tallies.on_stored(
                record, Mapped(resources=[res], event_time=event if n % 3 else None), source, _NOW
            )
        fh.write(f"tallies\t{sorted(tallies._tally.items())!r}\n")
    return n


def compare_dumps(before: Path, after: Path) -> None:
    """Exit with the first differing lines unless the two dumps are identical line for line."""
    old, new = before.read_text("utf-8").splitlines(), after.read_text("utf-8").splitlines()
    if len(old) != len(new):
        raise SystemExit(f"DIFFERENT: {len(old)} lines before, {len(new)} after")
    diffs = [(a, b) for a, b in zip(old, new, strict=True) if a != b]
    for a, b in diffs[:5]:
        print(f"- {a[:400]}\n+ {b[:400]}")
    if diffs:
        raise SystemExit(f"DIFFERENT: {len(diffs)} lines differ")
    print("identical")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--bench", type=int, default=3000, help="benchmark resources in the corpus")
    ap.add_argument("--compare", type=Path, help="an earlier dump that must be identical")
    args = ap.parse_args()
    os.environ.setdefault("RHIP_DATA_DIR", tempfile.mkdtemp(prefix="rhip-eq-"))
    n = dump(args.out, args.bench)
    print(f"{n} resources dumped to {args.out}")
    if args.compare:
        compare_dumps(args.compare, args.out)


if __name__ == "__main__":
    main()
