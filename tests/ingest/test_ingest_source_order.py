"""FHIR resources with ``meta.lastUpdated`` and CSV rows with a last-modified column are ordered by
that source time: an older update delivered after a newer one is counted stale and not applied."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select, text

from rhip.config import get_settings
from rhip.ingest.fhir_files import source_time
from rhip.ingest.model import BatchReport, MappingError
from rhip.ingest.pipeline import Pipeline
from rhip.ingest.runner import ingest_file
from rhip.ingest.schema import ingest_quarantine
from rhip.quality.collector import QualityCollector
from rhip.store import Store

OLD = "2026-03-01T01:00:00Z"
NEW = "2026-03-01T10:00:00.500+08:00"  # 02:00:00.5 UTC
NEWEST = "2026-03-02T00:00:00Z"


def _patient(family: str, updated: str | None, pid: str = "p1") -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": "Patient", "id": pid, "name": [{"family": family}]}
    if updated is not None:
        res["meta"] = {"versionId": "7", "lastUpdated": updated}
    return res


def _ndjson(path: Path, *resources: dict[str, Any]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in resources))
    return path


def _family(store: Store, pid: str = "p1") -> str:
    return str(store.read("Patient", pid)["name"][0]["family"])


def _source_time(store: Store, res_type: str, res_id: str) -> float | None:
    with store.engine.connect() as conn:
        found = conn.execute(
            text("SELECT event_time FROM ingest_source_time WHERE res_type = :t AND res_id = :i"),
            {"t": res_type, "i": res_id},
        ).scalar_one_or_none()
    return None if found is None else float(found)


def _counts(rep: BatchReport) -> tuple[int, int, int, int, int]:
    assert rep.reconciled
    return rep.received, rep.stored, rep.quarantined, rep.duplicates, rep.stale


def _reasons(pipeline: Pipeline) -> list[list[dict[str, str]]]:
    with pipeline.engine.connect() as conn:
        return [json.loads(r[0]) for r in conn.execute(select(ingest_quarantine.c.reasons).order_by("q_id"))]


def test_source_time_reads_instants_with_offsets_and_fractions() -> None:
    assert source_time(_patient("x", OLD), "Patient") == 1772326800.0
    assert source_time(_patient("x", NEW), "Patient") == 1772330400.5
    assert source_time(_patient("x", None), "Patient") is None
    assert source_time({"resourceType": "Patient", "meta": {"source": "x"}}, "Patient") is None
    leap = source_time(_patient("x", "2026-03-01T00:59:60.25-01:00"), "Patient")
    assert leap == 1772330400.25  # second 60 rolls over to the next minute


@pytest.mark.parametrize(
    ("bad", "rule"),
    [
        ("2026-03-01", "value"),
        ("2026-03-01T10:00:00", "value"),
        ("2026-02-30T10:00:00Z", "value"),
        ("2026-03-01T25:00:00Z", "value"),
        ("２０２６-03-01T10:00:00Z", "value"),  # full-width digits
        (5, "structure"),
        (None, "structure"),
    ],
)
def test_a_bad_last_updated_is_a_mapping_error_naming_its_path(bad: Any, rule: str) -> None:
    """Same rule as the platform validator gives the value; the record can then not be ordered."""
    with pytest.raises(MappingError) as err:
        source_time({"resourceType": "Patient", "meta": {"lastUpdated": bad}}, "Bundle.entry[1].resource")
    (found,) = err.value.issues
    assert found.code == rule and found.expression == ("Bundle.entry[1].resource.meta.lastUpdated",)


def test_older_ndjson_file_after_newer_is_stale(pipeline: Pipeline, tmp_path: Path) -> None:
    """A late NDJSON file with an older meta.lastUpdated overwrote the newer version."""
    store = pipeline.store
    first = ingest_file(pipeline, _ndjson(tmp_path / "a.ndjson", _patient("Zhou", NEW)), "F1")
    assert _counts(first) == (1, 1, 0, 0, 0)
    older = ingest_file(pipeline, _ndjson(tmp_path / "b.ndjson", _patient("Wu", OLD)), "F1")
    assert _counts(older) == (1, 0, 0, 0, 1)
    stored = store.read("Patient", "p1")
    assert stored["name"][0]["family"] == "Zhou" and stored["meta"]["versionId"] == "1"
    assert stored["meta"]["lastUpdated"] != NEW  # the store stamps its own write time
    assert _source_time(store, "Patient", "p1") == 1772330400.5
    again = ingest_file(pipeline, tmp_path / "a.ndjson", "F1")
    assert _counts(again) == (1, 0, 0, 1, 0)  # same time, same content: a duplicate
    newest = ingest_file(pipeline, _ndjson(tmp_path / "c.ndjson", _patient("Zheng", NEWEST)), "F1")
    assert _counts(newest) == (1, 1, 0, 0, 0)
    assert _family(store) == "Zheng" and store.read("Patient", "p1")["meta"]["versionId"] == "2"


def test_older_line_after_newer_within_one_file(pipeline: Pipeline, tmp_path: Path) -> None:
    """Within one file (one chunk) the later but older line won over the newer one."""
    path = _ndjson(
        tmp_path / "Patient.ndjson",
        _patient("Zhou", NEW),
        _patient("Wu", OLD),
        _patient("Li", OLD, pid="p2"),
        _patient("Zheng", NEWEST, pid="p2"),
    )
    assert _counts(ingest_file(pipeline, path, "F1")) == (4, 3, 0, 0, 1)
    assert (_family(pipeline.store), _family(pipeline.store, "p2")) == ("Zhou", "Zheng")


def test_without_last_updated_a_late_delivery_still_overwrites(pipeline: Pipeline, tmp_path: Path) -> None:
    """Unchanged behaviour for resources that carry no source time: no ordering, no source-time rows."""
    ingest_file(pipeline, _ndjson(tmp_path / "a.ndjson", _patient("Zhou", None)), "F1")
    late = ingest_file(pipeline, _ndjson(tmp_path / "b.ndjson", _patient("Wu", None)), "F1")
    assert _counts(late) == (1, 1, 0, 0, 0)
    assert _family(pipeline.store) == "Wu" and _source_time(pipeline.store, "Patient", "p1") is None


def test_an_invalid_last_updated_is_quarantined(pipeline: Pipeline, tmp_path: Path) -> None:
    """Kept from before: the validator already quarantined a bad instant; it still does, same rule."""
    path = _ndjson(
        tmp_path / "Patient.ndjson", _patient("Zhou", "2026-02-30T10:00:00Z"), _patient("Wu", NEW, "p2")
    )
    assert _counts(ingest_file(pipeline, path, "F1")) == (2, 1, 1, 0, 0)
    assert [(r["rule"], r["path"]) for r in _reasons(pipeline)[0]] == [("value", "Patient.meta.lastUpdated")]


def _bundle(path: Path, *resources: dict[str, Any]) -> Path:
    entries = [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        for r in resources
    ]
    path.write_bytes(orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}))
    return path


def _observation(value: int, updated: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": "o1",
        "meta": {"lastUpdated": updated},
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": "Patient/p1"},
        "valueQuantity": {
            "value": value,
            "unit": "/min",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
    }


def test_bundle_resources_are_ordered_each_by_its_own_time(pipeline: Pipeline, tmp_path: Path) -> None:
    """A flattened bundle's older resources overwrote newer ones; now each is ordered on its own."""
    store = pipeline.store
    first = _bundle(tmp_path / "1.json", _patient("Zhou", NEW), _observation(70, OLD))
    assert _counts(ingest_file(pipeline, first, "F1")) == (1, 1, 0, 0, 0)
    mixed = _bundle(tmp_path / "2.json", _patient("Wu", OLD), _observation(80, NEW))
    assert _counts(ingest_file(pipeline, mixed, "F1")) == (1, 1, 0, 0, 0)
    assert _family(store) == "Zhou" and store.read("Patient", "p1")["meta"]["versionId"] == "1"
    assert store.read("Observation", "o1")["valueQuantity"]["value"] == 80
    older = _bundle(tmp_path / "3.json", _patient("Li", OLD), _observation(90, OLD))
    assert _counts(ingest_file(pipeline, older, "F1")) == (1, 0, 0, 0, 1)
    assert store.read("Observation", "o1")["valueQuantity"]["value"] == 80
    assert _counts(ingest_file(pipeline, mixed, "F1")) == (1, 0, 0, 1, 0)  # the same bundle again


MAPPING = """name: person
encoding: utf-8
datetime_formats: ["%Y-%m-%d %H:%M:%S"]
tables:
  person.csv:
    modified_column: 更新时间
    resources:
      - type: Patient
        id_from: [档案编号]
        fields:
          name[0].family: {column: 姓名}
"""


def _csv(path: Path, *rows: str) -> Path:
    path.write_text("\r\n".join(["档案编号,姓名,更新时间", *rows]) + "\r\n", encoding="utf-8")
    return path


def test_csv_rows_with_a_modified_column_are_ordered(pipeline: Pipeline, tmp_path: Path) -> None:
    """CSV rows had no source time: an older row delivered late overwrote the newer one."""
    mapping = tmp_path / "person.yaml"
    mapping.write_text(MAPPING, encoding="utf-8")
    first = _csv(tmp_path / "person.csv", "0001,Zhou,2026-03-01 10:00:00", "0001,Wu,2026-03-01 09:00:00")
    assert _counts(ingest_file(pipeline, first, "F1", mapping=str(mapping))) == (2, 1, 0, 0, 1)
    later = _csv(tmp_path / "person.csv", "0001,Li,2026-03-01 09:30:00", "0001,Zheng,2026-03-02 08:00:00")
    assert _counts(ingest_file(pipeline, later, "F1", mapping=str(mapping))) == (2, 1, 0, 0, 1)
    patients = [p for p, *_ in pipeline.store.iter_current("Patient") if p]
    assert [p["name"][0]["family"] for p in patients] == ["Zheng"]
    assert patients[0]["meta"]["versionId"] == "2"
    (pid,) = [p["id"] for p in patients]
    # read in the mapping's zone (Asia/Shanghai): 08:00 local is 00:00 UTC
    assert _source_time(pipeline.store, "Patient", pid) == 1772409600.0
    bad = _csv(tmp_path / "person.csv", "0002,Sun,", "0003,Zhao,yesterday")
    assert _counts(ingest_file(pipeline, bad, "F1", mapping=str(mapping))) == (2, 0, 2, 0, 0)
    assert [(r[0]["rule"], r[0]["path"]) for r in _reasons(pipeline)] == [
        ("required", "更新时间"),
        ("data-type", "更新时间"),
    ]


def test_a_mapping_naming_no_modified_column_is_refused(tmp_path: Path) -> None:
    from rhip.errors import InvalidRequest
    from rhip.ingest.csvmap import load_mapping

    mapping = tmp_path / "person.yaml"
    mapping.write_text(MAPPING.replace("modified_column: 更新时间", "modified_column: [a]"), encoding="utf-8")
    with pytest.raises(InvalidRequest) as err:
        load_mapping(str(mapping))
    assert "tables.person.csv.modified_column must name a column" in err.value.diagnostics


def _two_deliveries(store: Store, tmp_path: Path) -> tuple[list[tuple[int, ...]], Pipeline]:
    """A stamped file, then one with an older line, a newer one and an older one after it (chunks of 2)."""
    pipeline = Pipeline(store, observers=[QualityCollector(store.engine)], chunk_size=2)
    first = _ndjson(tmp_path / "a.ndjson", _patient("Zhou", NEW), _patient("Li", None, "p2"))
    second = _ndjson(
        tmp_path / "b.ndjson",
        _patient("Wu", OLD),
        _patient("Sun", NEWEST, "p3"),
        _patient("Zhao", NEW, "p3"),  # older than the line before it, in the next chunk
        _patient("Qian", None, "p2"),
    )
    return [_counts(ingest_file(pipeline, path, "F1")) for path in (first, second)], pipeline


def _tallies_and_times(store: Store) -> tuple[list[Any], list[Any]]:
    with store.engine.connect() as conn:
        tallies = conn.execute(
            text(
                "SELECT day, rule, sum(checked), sum(failed) FROM quality_tally "
                "GROUP BY day, rule ORDER BY day, rule"
            )
        ).all()
        times = conn.execute(
            text("SELECT res_type, res_id, event_time FROM ingest_source_time ORDER BY 2")
        ).all()
    return [tuple(r) for r in tallies], [(t, i, float(e)) for t, i, e in times]


def test_the_producer_process_orders_as_one_process_does(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bulk NDJSON through the producer process: stale across files and within one file, and the
    same counts, bodies, quality tallies and source times as one process (the quality rules of a
    chunk with ordered records run in the writer, where stale records are known)."""
    one_store = Store(f"sqlite:///{tmp_path / 'one.sqlite'}")
    monkeypatch.setenv("RHIP_INGEST_PRODUCER_MIN_BYTES", "1")
    get_settings.cache_clear()
    store = Store(db_url)
    try:
        counts, pipeline = _two_deliveries(store, tmp_path)
        assert pipeline.producer_stats is not None
        assert counts == [(2, 2, 0, 0, 0), (4, 2, 0, 0, 2)]
        assert [_family(store, p) for p in ("p1", "p2", "p3")] == ["Zhou", "Qian", "Sun"]
        monkeypatch.setenv("RHIP_INGEST_PRODUCER_MIN_BYTES", "0")
        get_settings.cache_clear()
        one_counts, one_pipeline = _two_deliveries(one_store, tmp_path)
        assert one_pipeline.producer_stats is None and one_counts == counts
        assert [_family(one_store, p) for p in ("p1", "p2", "p3")] == ["Zhou", "Qian", "Sun"]
        assert _tallies_and_times(store) == _tallies_and_times(one_store)
    finally:
        store.close()
        one_store.close()
        get_settings.cache_clear()


def test_quality_counts_a_stamped_resource_on_its_source_day(pipeline: Pipeline, tmp_path: Path) -> None:
    """The source time is the record's event time for the quality rules too (day and timeliness)."""
    ingest_file(
        pipeline, _ndjson(tmp_path / "a.ndjson", _patient("Zhou", OLD), _patient("Li", None, "p2")), "F1"
    )
    with pipeline.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT day, rule, checked FROM quality_tally "
                "WHERE rule IN ('timeliness.arrival-24h', 'conformance.record-accepted')"
            )
        ).all()
    days = {(day, rule): checked for day, rule, checked in rows}
    assert days[("2026-03-01", "timeliness.arrival-24h")] == 1
    assert days[("2026-03-01", "conformance.record-accepted")] == 1
    assert sum(n for (_, rule), n in days.items() if rule == "conformance.record-accepted") == 2
