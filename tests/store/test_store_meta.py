"""Pure helpers: ids, instants, ETags, stamps, JSON Patch shape, bundle URLs, insert SQL."""

from __future__ import annotations

import time
import uuid

import pytest

from rhip.errors import InvalidRequest, NotSupported
from rhip.store import format_instant, new_id, parse_etag, parse_instant
from rhip.store.bundle_entries import parse_url
from rhip.store.fastinsert import copy_sql, insert_sql
from rhip.store.meta import check_id, content_of, next_timestamp, stamp
from rhip.store.schema import resource


def test_instants_round_trip_in_utc() -> None:
    assert format_instant(0) == "1970-01-01T00:00:00.000+00:00"
    assert format_instant(1795335533.6189) == "2026-11-22T08:18:53.619+00:00"
    assert parse_instant("2026-11-22T16:18:53.619+08:00") == pytest.approx(1795335533.619)
    assert parse_instant("2026-11-22T08:18:53.619Z") == pytest.approx(1795335533.619)
    assert parse_instant("2026") == parse_instant("2026-01-01T00:00:00Z")
    with pytest.raises(InvalidRequest):
        parse_instant("yesterday")


def test_next_timestamp_is_strictly_later() -> None:
    assert next_timestamp(100.0, 50.0) == pytest.approx(100.001)
    assert next_timestamp(100.0, 200.0) == 200.0
    assert next_timestamp(None, 5.0) == 5.0


def test_ids_and_etags() -> None:
    assert check_id(new_id()) and len({new_id() for _ in range(100)}) == 100
    assert len({new_id() for _ in range(100_000)}) == 100_000  # same milliseconds: the random bits differ
    assert [parse_etag(v) for v in ('W/"3"', '"4"', "5")] == [3, 4, 5]
    with pytest.raises(InvalidRequest):
        parse_etag('W/"x"')


def test_stamp_and_content() -> None:
    body = {"gender": "male", "resourceType": "Patient", "meta": {"source": "s", "versionId": "9"}}
    stamped = stamp(body, "p1", 2, 0.5)
    assert list(stamped)[:3] == ["resourceType", "id", "meta"]
    assert stamped["meta"] == {
        "source": "s",
        "versionId": "2",
        "lastUpdated": "1970-01-01T00:00:00.500+00:00",
    }
    assert content_of(stamped) == {
        "resourceType": "Patient",
        "id": "p1",
        "gender": "male",
        "meta": {"source": "s"},
    }
    assert body["meta"]["versionId"] == "9"


def test_bundle_urls() -> None:
    assert parse_url("Patient", "u") == ("Patient", None, None, None)
    assert parse_url("Patient/1/_history/2", "u") == ("Patient", "1", 2, None)
    assert parse_url("Patient?identifier=a|b&name=x", "u") == (
        "Patient",
        None,
        None,
        [("identifier", "a|b"), ("name", "x")],
    )
    assert parse_url("https://h/fhir/Patient/7", "u") == ("Patient", "7", None, None)
    with pytest.raises(InvalidRequest):
        parse_url("/Patient/1/extra/x", "u")
    with pytest.raises(NotSupported):
        parse_url("Patient/1/$everything", "u")


def test_insert_sql_uses_schema_identifiers_and_bound_values() -> None:
    assert insert_sql(resource, "qmark") == (
        "INSERT INTO resource (res_type, res_id, version_id, last_updated, deleted, body) "
        "VALUES (?, ?, ?, ?, ?, ?)"
    )
    assert insert_sql(resource, "pyformat").endswith("VALUES (%s, %s, %s, %s, %s, %s)")
    assert (
        copy_sql(resource)
        == "COPY resource (res_type, res_id, version_id, last_updated, deleted, body) FROM STDIN"
    )


def test_new_ids_are_version_7_uuids_led_by_the_creation_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    made = new_id()
    after = time.time_ns() // 1_000_000
    parsed = uuid.UUID(made)
    assert str(parsed) == made and len(made) == 36
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert before <= parsed.int >> 80 <= after


def test_new_ids_sort_in_the_order_they_were_made() -> None:
    made = []
    for _ in range(20):
        made.append(new_id())
        time.sleep(0.002)  # the next one falls in a later millisecond
    assert sorted(made) == made
