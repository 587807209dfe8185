"""Shared parts of the ingest fuzz tests: mutations of valid input and the property every batch keeps.

Each connector's fuzz test starts from valid input (what the generator writes, or the fixtures of
the connector's own tests), mutates it with the strategies below, pushes it through the real
pipeline into a real SQLite store and checks :func:`assert_batch_sound`: the batch reconciles,
every quarantined record names a specific reason, and every stored resource passes the validator.

The number of examples is small by default so the suite stays fast; ``RHIP_FUZZ_EXAMPLES=5000``
runs every fuzz test that hard (docs/ingest-requirements.md, *Fuzzing*). Without it the examples
are derandomised, so the suite is reproducible; with it each run explores new input.

``RHIP_FUZZ_DB=postgresql`` runs the same tests on PostgreSQL, which refuses what SQLite keeps (NUL
characters in text, values wider than a varchar column, integers out of range): each example gets
a database cloned from a prepared template database.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from sqlalchemy import select

from rhip.fhir.validation import validate_resource
from rhip.ingest.conceptmaps import install_conceptmaps
from rhip.ingest.csvmap import load_mapping
from rhip.ingest.mappers import MAPPERS, MapContext
from rhip.ingest.model import BatchReport, Record, SourceInfo
from rhip.ingest.pipeline import Pipeline
from rhip.ingest.schema import ingest_batch, ingest_quarantine
from rhip.quality.collector import QualityCollector
from rhip.store import Store
from rhip.store.schema import resource as resource_table

#: Rules that only say a component failed unexpectedly (a caught exception): the fuzz treats them
#: as defects, since the record's reason then names no element and no rule of the input.
GENERIC_RULES = frozenset({"mapper-error", "canonicalise-error", "validator-error", "internal-error"})

FUZZ_EXAMPLES = int(os.environ.get("RHIP_FUZZ_EXAMPLES", "0"))

#: The back end of the fuzz stores: "sqlite" (the default) or "postgresql".
FUZZ_DB = os.environ.get("RHIP_FUZZ_DB", "sqlite")


def fuzz_settings(default: int) -> settings:
    """Hypothesis settings: ``default`` examples, or ``RHIP_FUZZ_EXAMPLES`` when set (long runs)."""
    return settings(
        max_examples=FUZZ_EXAMPLES or default,
        deadline=None,
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
        derandomize=not FUZZ_EXAMPLES,
        database=None,  # a failure prints its example; nothing is left in the work tree
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


# -- fresh stores ------------------------------------------------------------------------------
def _prepare(url: str) -> None:
    """Put the shipped ConceptMaps and the ingest tables into the store at ``url``."""
    store = Store(url)
    try:
        install_conceptmaps(store)
        Pipeline(store, producer=False)  # creates the ingest tables
    finally:
        store.close()


class StoreFactory:
    """Fresh SQLite stores for each example, copied from one prepared template (~10 ms each)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.template = folder / "template.sqlite"
        _prepare(f"sqlite:///{self.template}")
        self.count = 0

    def close(self) -> None:
        """Nothing to release: the examples' files are removed as they finish."""

    @contextmanager
    def pipeline(self) -> Iterator[Pipeline]:
        """A pipeline (with the quality collector) on a store of its own, removed afterwards."""
        self.count += 1
        path = self.folder / f"example-{self.count}.sqlite"
        shutil.copyfile(self.template, path)
        store = Store(f"sqlite:///{path}")
        try:
            yield Pipeline(store, observers=[QualityCollector(store.engine)], producer=False)
        finally:
            store.close()
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)


class PgStoreFactory:
    """Fresh PostgreSQL stores for each example, cloned from one prepared template database.

    ``CREATE DATABASE ... TEMPLATE`` copies the template's files, which is much quicker than
    creating the schema and installing the ConceptMaps again for every example.
    """

    def __init__(self, admin_url: str) -> None:
        import psycopg

        self.admin_url = admin_url
        self.prefix = f"rhip_fz_{uuid.uuid4().hex[:8]}"
        self.template = f"{self.prefix}_tpl"
        self.base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
        self._admin = psycopg.connect(admin_url, autocommit=True)
        self._admin.execute(f'CREATE DATABASE "{self.template}"')
        _prepare(f"{self.base}/{self.template}")
        self.count = 0

    def close(self) -> None:
        """Drop the template database."""
        self._admin.execute(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')
        self._admin.close()

    @contextmanager
    def pipeline(self) -> Iterator[Pipeline]:
        """A pipeline (with the quality collector) on a database of its own, dropped afterwards."""
        self.count += 1
        name = f"{self.prefix}_{self.count}"
        self._admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        store = Store(f"{self.base}/{name}")
        try:
            yield Pipeline(store, observers=[QualityCollector(store.engine)], producer=False)
        finally:
            store.close()
            self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def shown_on_failure(**inputs: Any) -> Iterator[None]:
    """Print the example's inputs and the traceback when the block fails.

    Hypothesis normally shows the failing example, but a long run can end in a
    FlakyStrategyDefinition report instead of it (seen with st.data() and module fixtures); the
    captured output of the failed test still holds the input and the original traceback.
    """
    try:
        yield
    except BaseException:
        for name, value in inputs.items():
            print(f"fuzz input {name}: {value!r:.4000}", file=sys.stderr)
        traceback.print_exc()
        raise


# -- the property ------------------------------------------------------------------------------
def quarantine_reasons(pipeline: Pipeline, batch_id: str | None = None) -> list[list[dict[str, str]]]:
    """The reasons of every quarantined record (of one batch, or all)."""
    q = ingest_quarantine
    stmt = select(q.c.reasons).order_by(q.c.q_id)
    if batch_id is not None:
        stmt = stmt.where(q.c.batch_id == batch_id)
    with pipeline.engine.connect() as conn:
        return [json.loads(r[0]) for r in conn.execute(stmt)]


def assert_reason_specific(reasons: list[dict[str, str]]) -> None:
    """A quarantine reason names its rule and where (path) or what (message), and is not a crash."""
    assert reasons, "quarantined without a reason"
    for r in reasons:
        assert r.get("rule"), f"reason without rule: {r}"
        assert r.get("path") or r.get("message"), f"reason without path or message: {r}"
        assert r["rule"] not in GENERIC_RULES, f"unexpected failure, not a specific reason: {r}"


def assert_stored_valid(pipeline: Pipeline) -> int:
    """Every current resource of the store passes the platform validator; returns how many there are."""
    with pipeline.engine.connect() as conn:
        types = [r[0] for r in conn.execute(select(resource_table.c.res_type).distinct())]
    n = 0
    for res_type in types:
        for body, res_id, _updated, _deleted in pipeline.store.iter_current(res_type):
            errors = [i for i in validate_resource(body) if i.severity in ("error", "fatal")]
            assert not errors, f"{res_type}/{res_id} stored but invalid: {errors}"
            n += 1
    return n


def _raise_the_failure(pipeline: Pipeline, report: BatchReport) -> None:
    """Map the batch's quarantined records again without the pipeline's guard, so the test shows
    the traceback of the mapper or canonicaliser failure behind a generic reason."""
    q = ingest_quarantine
    stmt = select(q.c.raw, q.c.position, q.c.context, q.c.connector, q.c.facility, q.c.reasons)
    with pipeline.engine.connect() as conn:
        rows = list(conn.execute(stmt.where(q.c.batch_id == report.batch_id)))
    for raw, position, context, connector, facility, reasons in rows:
        if not any(r["rule"] in GENERIC_RULES for r in json.loads(reasons)):
            continue
        ctx = json.loads(context)
        rec = Record(bytes(raw), position, key=ctx.pop("_key", None), context=ctx)
        source = SourceInfo(facility, connector, report.source.location)
        mctx = MapContext(source, pipeline.tz, pipeline.translator, {"store": pipeline.store})
        if connector == "csv":
            mctx.options["mapping"] = load_mapping(ctx["mapping"])
        mapped = MAPPERS[connector](rec, mctx)
        for res in mapped.resources:
            pipeline.canonicaliser.apply(res)
            validate_resource(res)
    raise AssertionError(f"generic reason, failure not reproduced outside the pipeline: {rows}")


def assert_batch_sound(pipeline: Pipeline, report: BatchReport, received: int | None = None) -> None:
    """The fuzz property for one batch (see the module docstring)."""
    assert report.reconciled, report
    if received is not None:
        assert report.received == received, (report, received)
    with pipeline.engine.connect() as conn:
        row = conn.execute(select(ingest_batch).where(ingest_batch.c.batch_id == report.batch_id)).one()
    counts = (row.received, row.stored, row.quarantined, row.duplicates, row.stale)
    assert counts == (report.received, report.stored, report.quarantined, report.duplicates, report.stale)
    reasons = quarantine_reasons(pipeline, report.batch_id)
    # identical quarantined records share one row and count once (the others are duplicates)
    assert len(reasons) == report.quarantined, (report, len(reasons))
    if any(r["rule"] in GENERIC_RULES for rs in reasons for r in rs):
        _raise_the_failure(pipeline, report)
    for r in reasons:
        assert_reason_specific(r)
    assert_stored_valid(pipeline)


# -- mutations ---------------------------------------------------------------------------------
ODD_TEXT = [
    "",
    " ",
    "\x00",
    "\u202e\u202dRTL",  # right-to-left override marks
    "\u200f\u200e",
    "ＡＢＣ１２３",  # full-width
    "　",  # ideographic space
    "\ufeff",
    "\U0001f600",
    "e\u0301",
    "\t\r\n",
    "|^~\\&",
    '"',
    "'; DROP TABLE resource; --",
    "-1",
    "0",
    "9" * 40,
    "1e400",
    "NaN",
    "2026-02-30",
    "20261301",
    "2026-11-01T25:61:00",
    "x" * 300,
    "张三" * 50,
    "\x1b[31m",
    "\\E\\\\F\\",
]

ODD_BYTES = [
    b"\x00",
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",  # an encoded lone surrogate
    b"\xef\xbb\xbf",
    "\u202e".encode(),
    "Ａ".encode(),
    "张".encode("gb18030"),
    b"\r",
    b"\n",
    b"\x0b",
    b"\x1c",
    b"|",
    b"^",
    b"~",
    b"\\",
    b'"',
    b",",
    b"{",
    b"]",
]

#: JSON fragments placed verbatim where a value was: numbers and escapes that Python cannot dump.
RAW_JSON = [
    "1e400",
    "-1e400",
    "123456789012345678901234567890",
    "-0",
    "1.7976931348623157e308",
    '"\\ud800"',
    '"\\udc00x"',
    '"\\u0000"',
    '"a\\u202eb"',
    "NaN",
    "[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]",
]

odd_text = st.one_of(st.sampled_from(ODD_TEXT), st.text(max_size=20))

json_values: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    odd_text,
    st.builds(list),
    st.builds(dict),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.sampled_from(["a", "value", "reference", "system"]), odd_text, max_size=2),
    st.sampled_from(RAW_JSON).map(lambda raw: _Raw(raw)),
)


class _Raw:
    """A JSON fragment written verbatim (huge numbers, lone surrogate escapes)."""

    def __init__(self, text: str) -> None:
        self.text = text


def dumps_with_raw(doc: Any) -> bytes:
    """JSON text of ``doc`` with every :class:`_Raw` written verbatim."""
    raws: list[str] = []

    def default(obj: Any) -> str:
        if isinstance(obj, _Raw):
            raws.append(obj.text)
            return f"\x00RAW{len(raws) - 1}\x00"
        raise TypeError(type(obj).__name__)

    text = json.dumps(doc, ensure_ascii=False, default=default)
    for n, raw in enumerate(raws):
        text = text.replace(json.dumps(f"\x00RAW{n}\x00"), raw)
    return text.encode("utf-8", "surrogatepass")


def json_paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (keys and indices) to a value in a JSON document, the root excluded."""
    out: list[tuple[Any, ...]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        out.append((*prefix, k))
        out.extend(json_paths(v, (*prefix, k)))
    return out


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for k in path[:-1]:
        doc = doc[k]
    return doc


@st.composite
def mutated_json(draw: st.DrawFn, doc: Any, max_ops: int = 3) -> bytes:
    """``doc`` after 1..max_ops structural mutations (wrong types anywhere, deletions, duplicates)."""
    doc = json.loads(json.dumps(doc))
    for _ in range(draw(st.integers(1, max_ops))):
        paths = json_paths(doc)
        if not paths:
            doc = draw(json_values)
            break
        path = draw(st.sampled_from(paths))
        parent = _parent(doc, path)
        key = path[-1]
        op = draw(st.sampled_from(["replace", "replace", "delete", "duplicate", "nest", "rename"]))
        if op == "replace":
            parent[key] = draw(json_values)
        elif op == "delete":
            del parent[key]
        elif op == "duplicate" and isinstance(parent, list):
            parent.insert(key, json.loads(json.dumps(parent[key], default=lambda o: None)))
        elif op == "nest":
            parent[key] = draw(st.sampled_from([[parent[key]], {"value": parent[key]}]))
        elif op == "rename" and isinstance(parent, dict):
            parent[draw(odd_text)] = parent.pop(key)
    return dumps_with_raw(doc)


@st.composite
def mutated_bytes(draw: st.DrawFn, raw: bytes, max_ops: int = 3) -> bytes:
    """``raw`` after 1..max_ops byte-level mutations: flips, truncation, deletion, duplication, odd bytes."""
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, max_ops))):
        n = len(data)
        op = draw(st.sampled_from(["flip", "truncate", "delete", "duplicate", "insert", "insert"]))
        at = draw(st.integers(0, max(n - 1, 0)))
        if op == "flip" and n:
            data[at] ^= draw(st.integers(1, 255))
        elif op == "truncate":
            del data[at:]
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "duplicate":
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
        else:
            data[at:at] = draw(st.sampled_from(ODD_BYTES))
    return bytes(data)


def reencode(text: str, encoding: str) -> bytes:
    """``text`` in another encoding (what cannot be written there becomes '?')."""
    return text.encode(encoding, "replace")


ENCODINGS = ["utf-8", "gb18030", "gbk", "utf-16", "latin-1", "big5", "shift_jis"]

Mutation = Callable[[st.DrawFn, bytes], bytes]
