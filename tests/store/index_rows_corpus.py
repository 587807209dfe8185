"""A broad, deterministic corpus of resources and a digest of the index rows each one gives.

The index rows of a resource (:func:`rhip.store.index_extract.index_tuples` and, for protected
types, :func:`rhip.store.indexing.tuple_rows_for`) are what every search answers from, so a faster
extractor must give exactly the rows the slower one gave. This module builds the resources (a
generated region, the R4 examples and Synthea files under tests/data, every search path of every
resource type filled with values of many shapes, and hand-written edge cases) and digests their
rows; ``index_rows_expected.json`` holds the digests as an earlier extractor computed them.

Regenerate the expected file only from a tree whose extractor is the reference:
``.venv/bin/python tests/store/index_rows_corpus.py``.
"""

from __future__ import annotations

import copy
import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from rhip.fhir.search_params import PathSpec, SearchParamDef, all_resource_types, search_params_for
from rhip.security.fields import TOKEN_PREFIX
from rhip.store.index_extract import index_tuples
from rhip.store.indexing import tuple_rows_for
from rhip.synth import generate

DATA = Path(__file__).resolve().parent.parent / "data"
EXPECTED = Path(__file__).resolve().parent / "index_rows_expected.json"
#: Folders under tests/data holding FHIR JSON (bundles, examples, NDJSON, SQL-on-FHIR test data).
DATA_SETS = ("fhir-r4-examples", "synthea-r4", "synthea-bulk-ndjson", "sql-on-fhir-v2")
Resource = dict[str, Any]


def rows_digest(resource: Resource) -> str:
    """A short hash of the sorted index rows of ``resource``, as stored and as the bulk path writes them.

    Malformed bodies that make extraction raise (validation keeps them out of the store) give the
    exception's class name instead: the extractor must fail on the same ones the same way.
    """
    try:
        return _rows_digest(resource)
    except Exception as exc:  # what fails is part of the recorded behaviour
        return f"raises {type(exc).__name__}"


def _rows_digest(resource: Resource) -> str:
    lines = sorted(
        repr((kind, table, row))
        for kind, rows in (("index", index_tuples(resource)), ("stored", tuple_rows_for(resource)))
        for table, table_rows in rows.items()
        for row in table_rows
    )
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]


def body_digest(resource: Resource) -> str:
    """A short hash of the resource itself, so a changed corpus is told apart from changed rows."""
    return hashlib.sha256(orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]


def corpora() -> dict[str, list[Resource]]:
    """Every corpus by name, each a list of resources in a fixed order."""
    return {
        "synth": list(_synth_resources()),
        "data": list(_data_resources()),
        "shapes": list(_shape_resources()),
        "edge": list(_with_ids(_edge_resources(), "edge")),
    }


def digests(resources: list[Resource]) -> dict[str, Any]:
    """One digest of all the bodies (the corpus itself) and the rows digest of each resource."""
    bodies = hashlib.sha256(b"".join(body_digest(r).encode() for r in resources)).hexdigest()[:16]
    return {"bodies": bodies, "rows": [rows_digest(r) for r in resources]}


# --- the generated region -------------------------------------------------------------------------


def _synth_resources() -> Iterator[Resource]:
    """Every FHIR resource a small generated region holds: its NDJSON files, bundles and claims."""
    with tempfile.TemporaryDirectory(prefix="rhip-index-corpus-") as tmp:
        out = Path(tmp)
        generate(out, residents=80, years=2, seed=11, formats=["fhir", "claims"])
        for path in sorted(out.rglob("*.ndjson")) + sorted(out.rglob("*.json")):
            yield from _with_ids(_resources_in_file(path), path.stem)


# --- test data ------------------------------------------------------------------------------------


def _data_resources() -> Iterator[Resource]:
    for folder in DATA_SETS:
        for path in sorted((DATA / folder).rglob("*")):
            if path.suffix in (".json", ".ndjson"):
                yield from _with_ids(_resources_in_file(path), path.stem)


def _resources_in_file(path: Path) -> Iterator[Resource]:
    """Every object with a ``resourceType`` in a JSON or NDJSON file, nested ones (bundle entries,
    contained resources) included."""
    raw = path.read_bytes()
    docs = (
        [orjson.loads(line) for line in raw.splitlines() if line.strip()]
        if path.suffix == ".ndjson"
        else [orjson.loads(raw)]
    )
    for doc in docs:
        yield from _nested_resources(doc)


def _nested_resources(node: Any) -> Iterator[Resource]:
    if isinstance(node, dict):
        if isinstance(node.get("resourceType"), str) and node["resourceType"][:1].isupper():
            yield node
        for value in node.values():
            yield from _nested_resources(value)
    elif isinstance(node, list):
        for value in node:
            yield from _nested_resources(value)


def _with_ids(resources: Iterator[Resource], prefix: str) -> Iterator[Resource]:
    """The resources, each given an id when it has none (resources without one give no rows)."""
    for n, resource in enumerate(resources):
        yield resource if isinstance(resource.get("id"), str) else {**resource, "id": f"{prefix}-{n}"}


# --- every search path of every type, filled with values of many shapes -----------------------------

_CODING = {"system": "http://loinc.org", "code": "8867-4", "display": "Ｈｅａｒｔ ｒａｔｅ 心率"}
_QUANTITY = {"value": 72.5, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}
#: Values of every shape a path may meet, well-formed and not.
LEAVES: tuple[Any, ...] = (
    "plain",
    "Ｗａｎｇ　Ｆａｎｇ 王芳 Ærøskøbing Ça",
    "x" * 600,
    "é" * 700,
    "",
    "2021",
    "2021-03",
    "2021-03-04",
    "2021-03-04T05:06",
    "2021-03-04T05:06:07.123+08:00",
    "2021-03-04T05:06:07Z",
    "2021-02-30",
    "9999-12-31T23:59:59.999-05:00",
    " 2020-01-01 ",
    "Patient/p1",
    "Observation/o1/_history/2",
    "http://127.0.0.1:8080/Patient/p2/_history/3",
    "https://other.example.org/fhir/Encounter/e1",
    "urn:uuid:2f0f8f8e-1b1c-4c7e-9d0a-0a0a0a0a0a0a",
    "#contained1",
    "http://hl7.org/fhir/ValueSet/x|4.0.1",
    "a/b/c",
    True,
    False,
    0,
    3.25,
    -7,
    None,
    {},
    [],
    {"coding": [_CODING, {"code": "x"}, "not-a-coding", {"system": "s", "display": 5}], "text": "Café 心率"},
    {"coding": [{"system": "http://snomed.info/sct", "code": "271649006"}]},
    {"text": "only text"},
    _CODING,
    {"system": "urn:oid:1.2.3", "value": "A-1", "type": {"text": "MRN Ü"}},
    {"type": {"coding": [_CODING]}},
    {"system": "phone", "value": "13800000000", "use": "mobile"},
    {"system": "email", "value": 5},
    {"family": "张", "given": ["三", "Ｊｏｈｎ", ""], "prefix": "Dr", "suffix": [7], "text": "张三"},
    {
        "line": ["1 Main St", "Apt 2"],
        "city": "Zürich",
        "district": "330402",
        "state": "ZH",
        "postalCode": "8001",
        "country": "CH",
        "text": "1 Main St, Zürich",
        "use": "home",
    },
    {"start": "2020", "end": "2021-05"},
    {"start": "bad"},
    {"end": "2020-01-01T00:00:00Z"},
    {"event": ["2020-01-01", "bad", 3], "repeat": {"boundsPeriod": {"start": "2019", "end": "2019-06"}}},
    {"event": ["2022-07-01T10:00:00+02:00"]},
    {"repeat": {"boundsPeriod": {"end": "2030"}}},
    {
        "low": {"value": 1, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"},
        "high": {"value": 2.5},
    },
    {"high": {"value": 9, "code": "kg"}},
    {"low": {"value": True}},
    _QUANTITY,
    {"value": "5", "unit": "kg"},
    {"value": 10, "currency": "CNY"},
    {"reference": "Patient/p1", "identifier": {"system": "urn:oid:2.16", "value": "v1"}, "display": "P"},
    {"type": "Patient", "identifier": {"value": "v2"}},
    {"type": "Patient", "reference": "https://other.example.org/Patient/9"},
    {"reference": "#c1"},
    {"display": "display only"},
    {"reference": "urn:uuid:1"},
    {"extension": [{"url": "http://example.org/ext", "valueString": "s"}]},
    ["a", {"coding": [_CODING]}, None, 4, {"value": 1}],
    [_QUANTITY, {"low": {"value": 2}}],
    [{"family": "Ｓｍｉｔｈ"}, {"given": ["Ａｎｎ"]}],
    f"{TOKEN_PREFIX}1:abcdef",
    {"system": "phone", "value": f"{TOKEN_PREFIX}1:abcdef"},
    {"system": "urn:oid:2.16.156.10011.1.1", "value": f"{TOKEN_PREFIX}1:abc", "type": {"text": "身份证"}},
)


def _shape_resources() -> Iterator[Resource]:
    """For each resource type and leaf: every parameter path set to that leaf (``same``), to the
    leaves in turn (``turn``, intermediate elements as one-item lists), and to the leaf a path's
    element type expects in turn (``typed``)."""
    for res_type in sorted(all_resource_types()):
        paths = _all_paths(res_type)
        for k in range(len(LEAVES)):
            same, turn = {"resourceType": res_type, "id": f"s{k}"}, {"resourceType": res_type, "id": f"t{k}"}
            typed = {"resourceType": res_type, "id": f"y{k}"}
            for n, p in enumerate(paths):
                _put(same, p.steps, LEAVES[k], listed=False)
                _put(turn, p.steps, LEAVES[(k + n) % len(LEAVES)], listed=True)
                choices = _TYPED.get(p.elem_type, LEAVES)
                _put(typed, p.steps, choices[(k + n) % len(choices)], listed=n % 2 == 1)
            yield from (same, turn, typed)
        yield from _one_param_resources(res_type)


def _one_param_resources(res_type: str) -> Iterator[Resource]:
    """One resource per parameter with only its paths set, to the leaf their element type expects:
    paths that share an element with other parameters (where-filters on one list) meet no rival."""
    for name, sp in sorted(search_params_for(res_type).items()):
        resource: Resource = {"resourceType": res_type, "id": f"p-{name}"}
        for p in _param_paths(sp):
            _put(resource, p.steps, _TYPED.get(p.elem_type, LEAVES)[0], listed=False)
        yield resource


def _all_paths(res_type: str) -> list[PathSpec]:
    """Every path of ``res_type``'s parameters from the resource root (composites' context joined on)."""
    return [p for _name, sp in sorted(search_params_for(res_type).items()) for p in _param_paths(sp)]


def _param_paths(sp: SearchParamDef) -> list[PathSpec]:
    """The paths of one parameter from the resource root (a composite's context joined on)."""
    return [
        *sp.paths,
        *(
            PathSpec(ctx_steps + p.steps, p.elem_type, p.is_type, p.const)
            for ctx_steps, comps in sp.contexts
            for comp in comps
            for p in comp.paths
        ),
    ]


def _put(node: Resource, steps: tuple[str | tuple[str, str], ...], leaf: Any, *, listed: bool) -> None:
    """Place ``leaf`` at ``steps`` below ``node`` unless another path put something else on the way.

    Where-filters become the filtered field on the element they test (on the leaf itself when they
    come last and the leaf is an object).
    """
    names = [i for i, s in enumerate(steps) if isinstance(s, str)]
    if not names:
        return
    last = names[-1]
    for step in steps[:last]:
        if not isinstance(step, str):
            if node.setdefault(step[0], step[1]) != step[1]:
                return
            continue
        child = node.setdefault(step, [{}] if listed else {})
        child = child[0] if isinstance(child, list) and child else child
        if not isinstance(child, dict):
            return
        node = child
    filters = {s[0]: s[1] for s in steps[last + 1 :] if not isinstance(s, str)}
    if filters and isinstance(leaf, dict):
        leaf = {**leaf, **filters}
    node.setdefault(str(steps[last]), copy.deepcopy(leaf))  # later paths may add fields inside it


_DATES = (
    "2020",
    "2020-02",
    "2020-02-29",
    "2020-02-29T23:59",
    "2020-02-29T23:59:59.5+14:00",
    "1969-12-31T00:00:00Z",
)
_TYPED: dict[str, tuple[Any, ...]] = {
    "Coding": (_CODING, {"code": "c"}, {"system": "s"}),
    "CodeableConcept": (
        {"coding": [_CODING], "text": "Text Ä"},
        {"coding": [{"system": "http://snomed.info/sct", "code": "1", "display": "ＡＢＣ"}, {"code": "2"}]},
    ),
    "Quantity": (_QUANTITY, {"value": 0, "unit": "mmHg"}, {"value": -1.5e3, "system": "s", "code": "c"}),
    "Range": ({"low": _QUANTITY, "high": {"value": 80}}, {"high": _QUANTITY}),
    "Money": ({"value": 12.5, "currency": "CNY"},),
    "Age": ({"value": 40, "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"},),
    "Duration": ({"value": 3, "code": "d"},),
    "Identifier": ({"system": "urn:oid:1", "value": "ID-1"}, {"value": "ID-2", "type": {"text": "Ｔｙｐｅ"}}),
    "ContactPoint": ({"system": "phone", "value": "123"}, {"system": "email", "value": "A@B.org"}),
    "HumanName": ({"family": "Ｌｉ", "given": ["Ｍｉｎｇ"]}, {"text": "李明", "family": "李"}),
    "Address": ({"city": "杭州市", "line": ["西湖路1号"], "country": "CN"}, {"postalCode": "310000"}),
    "Period": ({"start": "2020-01-01", "end": "2020-12-31T23:59:59Z"}, {"start": "2021-06"}),
    "Timing": ({"event": list(_DATES[:3])}, {"repeat": {"boundsPeriod": {"start": "2019"}}}),
    "Reference": (
        {"reference": "Patient/p1"},
        {"reference": "Practitioner/d1"},
        {"identifier": {"value": "x"}},
    ),
    "canonical": ("http://example.org/Questionnaire/q|2", "http://example.org/ValueSet/v"),
    "boolean": (True, False),
    "date": _DATES,
    "dateTime": _DATES,
    "instant": _DATES[-2:],
    "decimal": (1.5, 2, "3"),
    "integer": (7, -1),
    "string": ("Ｆｕｌｌ ｗｉｄｔｈ", "Crème brûlée", "王"),
    "markdown": ("**bold**",),
}


# --- hand-written edge cases ------------------------------------------------------------------------


def _edge_resources() -> Iterator[Resource]:
    """Choice types, extensions, contained resources, missing and empty elements, unusual text."""
    yield {"resourceType": "Patient"}  # no id: given one by _with_ids
    yield {"resourceType": "Patient", "id": 5, "name": [{"family": "NoStrId"}]}
    yield {"resourceType": "NoSuchType", "id": "n1", "name": "x"}
    yield {
        "resourceType": "Patient",
        "id": "fw",
        "name": [
            {"family": "ＺＨＡＮＧ", "given": ["ｓａｎ", "三"], "text": "张　三"},
            {"family": "Müller-Lüdenscheidt"},
        ],
        "telecom": [
            {"system": "phone", "value": "13800000000"},
            {"system": "email", "value": "Ａ@example.org"},
        ],
        "address": [
            {"line": ["北京市朝阳区"], "city": "北京", "extension": [{"url": "u", "valueCode": "x"}]}
        ],
        "birthDate": "1990",
        "deceasedBoolean": False,
        "active": True,
        "gender": "other",
        "link": [{"other": {"reference": "Patient/other"}, "type": "seealso"}],
        "generalPractitioner": [{"reference": "Practitioner/p1"}, {"reference": "Organization/o1"}],
        "contained": [{"resourceType": "Organization", "id": "c1", "name": "Contained Org"}],
        "managingOrganization": {"reference": "#c1"},
        "_birthDate": {
            "extension": [
                {
                    "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                    "valueDateTime": "1990-01-01T10:00:00+08:00",
                }
            ]
        },
    }
    for value_key, value in (
        ("valueQuantity", _QUANTITY),
        ("valueCodeableConcept", {"coding": [_CODING], "text": "Pos"}),
        ("valueString", "Ｐｏｓｉｔｉｖｅ"),
        ("valueBoolean", True),
        ("valueInteger", 3),
        ("valueRange", {"low": {"value": 1}, "high": {"value": 2}}),
        ("valueDateTime", "2020-01-01T00:00:00Z"),
        ("valuePeriod", {"start": "2020"}),
    ):
        yield {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [_CODING, {"system": "http://loinc.org", "code": "85354-9"}]},
            "subject": {"reference": "Patient/p1"},
            "effectivePeriod": {"start": "2020-01-01T08:00:00+08:00", "end": "2020-01-01T09:00"},
            value_key: value,
            "component": [
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]}, value_key: value},
                {
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                    "dataAbsentReason": {"text": "x"},
                },
                "not-a-component",
            ],
            "extension": [{"url": "http://example.org/x", "valueReference": {"reference": "Patient/p9"}}],
        }
    yield {"resourceType": "Observation", "id": "empty-parts", "code": {}, "subject": {}, "component": [{}]}
    yield {
        "resourceType": "Condition",
        "id": "c",
        "onsetAge": {"value": 40, "unit": "a"},
        "code": {"text": "仅文本"},
    }
    yield {
        "resourceType": "MedicationRequest",
        "id": "m",
        "medicationCodeableConcept": {"coding": [_CODING]},
        "dosageInstruction": [{"timing": {"event": ["2020-01-01"]}}],
        "authoredOn": "2020-01-01T00:00:00+08:00",
    }
    yield {
        "resourceType": "Claim",
        "id": "cl",
        "total": {"value": 99.5, "currency": "CNY"},
        "created": "2020",
    }


if __name__ == "__main__":
    EXPECTED.write_bytes(
        orjson.dumps({name: digests(resources) for name, resources in corpora().items()}) + b"\n"
    )
    print(f"wrote {EXPECTED} ({EXPECTED.stat().st_size:,} bytes)")
