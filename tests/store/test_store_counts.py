"""The store's own figures for ``rhip status``: resources per type and the newest write."""

from __future__ import annotations

from rhip.store import Store


def test_count_by_type_lists_current_resources_most_numerous_first(db_url: str) -> None:
    with Store(db_url) as store:
        assert store.count_by_type() == {}
        assert store.last_write() is None
        ids = [store.create({"resourceType": "Patient", "gender": "female"}).res_id for _ in range(3)]
        store.create({"resourceType": "Observation", "status": "final", "code": {"text": "bp"}})
        store.create({"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}})
        store.create({"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}})
        written = store.last_write()
        store.delete("Patient", ids[0])
        assert store.count_by_type() == {"Patient": 2, "Encounter": 2, "Observation": 1}
        assert list(store.count_by_type()) == ["Encounter", "Patient", "Observation"]  # ties by type
        deleted = store.last_write()
        assert written is not None and deleted is not None and deleted > written  # a delete is a write
