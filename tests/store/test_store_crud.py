"""Create, read, vread, update, delete and optimistic concurrency on both back ends."""

from __future__ import annotations

import itertools
import re

import pytest

from rhip.errors import InvalidRequest, InvalidResource, ResourceGone, ResourceNotFound, VersionConflict
from rhip.store import Store, format_instant, parse_instant

INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00")


def _patient(family: str = "Wang", **extra: object) -> dict[str, object]:
    return {"resourceType": "Patient", "name": [{"family": family}], "gender": "female", **extra}


def test_create_assigns_id_and_meta(store: Store) -> None:
    result = store.create(_patient())
    body = result.resource
    assert result.created and result.outcome == "created" and result.version_id == 1
    assert re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", body["id"])
    assert body["meta"]["versionId"] == "1"
    assert INSTANT.fullmatch(body["meta"]["lastUpdated"])
    assert parse_instant(body["meta"]["lastUpdated"]) == pytest.approx(result.last_updated, abs=1e-3)
    assert result.etag == 'W/"1"'
    assert result.location == f"Patient/{body['id']}/_history/1"
    assert store.read("Patient", body["id"]) == body


def test_create_does_not_modify_input_and_keeps_other_meta(store: Store) -> None:
    given = _patient(meta={"source": "hosp-a", "versionId": "99"})
    result = store.create(given)
    assert given["meta"] == {"source": "hosp-a", "versionId": "99"}
    assert "id" not in given
    assert result.resource["meta"]["source"] == "hosp-a"
    assert result.resource["meta"]["versionId"] == "1"


def test_create_keeps_client_id_unless_assign_id(store: Store) -> None:
    kept = store.create(_patient(id="p-1"))
    assert kept.res_id == "p-1"
    with pytest.raises(VersionConflict) as exc:
        store.create(_patient(id="p-1"))
    assert exc.value.status == 409
    fresh = store.create(_patient(id="p-1"), assign_id=True)
    assert fresh.res_id != "p-1"


def test_invalid_client_ids_are_rejected(store: Store) -> None:
    for bad_id in ["has space", "x" * 65, "a/b", "", "中文"]:
        with pytest.raises(InvalidRequest):
            store.create(_patient(id=bad_id))
        with pytest.raises(InvalidRequest):
            store.update("Patient", bad_id, _patient())
    assert store.count() == 0


def test_invalid_resource_type_is_rejected(store: Store) -> None:
    with pytest.raises(InvalidRequest):
        store.create({"resourceType": "patient"})
    with pytest.raises(InvalidRequest):
        store.create({"name": []})


def test_update_creates_new_versions_and_vread_keeps_old(store: Store) -> None:
    first = store.create(_patient())
    res_id = first.res_id
    second = store.update("Patient", res_id, {**first.resource, "gender": "male"})
    assert not second.created and second.outcome == "updated" and second.version_id == 2
    assert second.resource["meta"]["versionId"] == "2"
    assert store.read("Patient", res_id)["gender"] == "male"
    assert store.vread("Patient", res_id, 1)["gender"] == "female"
    assert store.vread("Patient", res_id, 2) == second.resource
    with pytest.raises(ResourceNotFound):
        store.vread("Patient", res_id, 3)


def test_last_updated_strictly_increases(store: Store) -> None:
    res_id = store.create(_patient()).res_id
    stamps = [store.update("Patient", res_id, _patient(str(i))).last_updated for i in range(8)]
    assert all(b > a for a, b in itertools.pairwise(stamps))
    rendered = [store.vread("Patient", res_id, v)["meta"]["lastUpdated"] for v in range(2, 10)]
    assert rendered == [format_instant(ts) for ts in stamps]
    assert sorted(set(rendered)) == rendered


def test_update_as_create_with_client_id(store: Store) -> None:
    result = store.update("Patient", "new-1", _patient())
    assert result.created and result.version_id == 1 and result.resource["id"] == "new-1"
    assert store.read("Patient", "new-1")["name"] == [{"family": "Wang"}]


def test_update_rejects_mismatched_type_or_id(store: Store) -> None:
    with pytest.raises(InvalidRequest):
        store.update("Patient", "a", _patient(id="b"))
    with pytest.raises(InvalidRequest):
        store.update("Observation", "a", _patient())


def test_if_match_conflicts(store: Store) -> None:
    res_id = store.create(_patient()).res_id
    assert store.update("Patient", res_id, _patient("Li"), if_match=1).version_id == 2
    with pytest.raises(VersionConflict) as exc:
        store.update("Patient", res_id, _patient("Zhao"), if_match=1)
    assert exc.value.status == 412
    assert store.read("Patient", res_id)["name"] == [{"family": "Li"}]
    with pytest.raises(VersionConflict):
        store.update("Patient", "does-not-exist", _patient(), if_match=1)
    with pytest.raises(VersionConflict):
        store.delete("Patient", res_id, if_match=1)


def test_read_unknown_is_404(store: Store) -> None:
    with pytest.raises(ResourceNotFound):
        store.read("Patient", "nope")
    with pytest.raises(ResourceNotFound):
        store.delete("Patient", "nope")


def test_delete_tombstone_410_and_resurrection(store: Store) -> None:
    res_id = store.create(_patient()).res_id
    deleted = store.delete("Patient", res_id)
    assert deleted.outcome == "deleted" and deleted.version_id == 2
    with pytest.raises(ResourceGone) as exc:
        store.read("Patient", res_id)
    assert exc.value.status == 410
    with pytest.raises(ResourceGone):
        store.vread("Patient", res_id, 2)
    assert store.vread("Patient", res_id, 1)["gender"] == "female"
    again = store.delete("Patient", res_id)
    assert again.outcome == "already-deleted" and again.version_id == 2
    assert store.search("Patient", []).total == 0
    with pytest.raises(VersionConflict):
        store.create(_patient(id=res_id))
    back = store.update("Patient", res_id, _patient("Back"))
    assert back.created and back.version_id == 3
    assert store.read("Patient", res_id)["name"] == [{"family": "Back"}]


def test_search_sees_current_versions_only(store: Store) -> None:
    res_id = store.create(_patient("Wang")).res_id
    store.update("Patient", res_id, _patient("Zhang"))
    assert [m["id"] for m in store.search("Patient", [("family", "Zhang")]).matches] == [res_id]
    assert store.search("Patient", [("family", "Wang")]).total == 0
    store.delete("Patient", res_id)
    assert store.search("Patient", [("family", "Zhang")]).total == 0


def test_iter_current_and_count(store: Store) -> None:
    a = store.create(_patient("A"))
    b = store.create(_patient("B"))
    store.delete("Patient", a.res_id)
    rows = list(store.iter_current("Patient"))
    assert [(r[1], r[3]) for r in rows] == [(b.res_id, False)]
    assert rows[0][0] == b.resource
    with_deleted = {r[1]: r for r in store.iter_current("Patient", include_deleted=True)}
    assert with_deleted[a.res_id][0] is None and with_deleted[a.res_id][3] is True
    assert list(store.iter_current("Patient", since=b.last_updated + 10)) == []
    assert store.count("Patient") == 1
    assert store.count("Patient", include_deleted=True) == 2


def test_values_that_are_not_json_are_rejected(store: Store) -> None:
    with pytest.raises(InvalidResource):
        store.create(_patient(multipleBirthInteger=2**70))
    assert store.count() == 0
