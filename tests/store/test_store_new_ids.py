"""Server-assigned ids over the real database: they follow creation order, so creates append.

A create's rows go into B-trees keyed on its id (both primary keys, each index table's
``(type, id, param)``, value indexes among rows of equal value). With ids in creation order a
create lands where the previous one did; with random ids each landed on a leaf page of its own,
and a commit of the API's group of creates wrote more pages the larger the store grew.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event

from rhip.store import Store, fieldcrypt

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "identifier": [{"system": "https://rhip.example.org/fhir/id/test", "value": "P-1"}],
    "name": [{"family": "王", "given": ["芳"]}],
    "gender": "female",
    "birthDate": "1980-05-17",
    "address": [{"city": "杭州市", "district": "西湖区"}],
    "managingOrganization": {"reference": "Organization/org-1"},
}
#: Creates per transaction, as the API's group commit makes them under load.
GROUP = 16
#: Bytes of one WAL frame: its 24-byte header and a 4 KiB page.
FRAME_BYTES = 24 + 4096


def test_assigned_ids_sort_in_creation_order(store: Store) -> None:
    ids = []
    for _ in range(6):
        ids.append(store.create(copy.deepcopy(PATIENT), assign_id=True).resource["id"])
        time.sleep(0.002)  # the next id falls in a later millisecond
        group = store.create_new([copy.deepcopy(PATIENT) for _ in range(2)])
        ids.extend(result.resource["id"] for result in group)
        time.sleep(0.002)
    assert len(set(ids)) == len(ids)
    assert sorted(ids[::3]) == ids[::3]  # the single creates, one millisecond apart at least
    for first, group_start in zip(ids[::3], ids[1::3], strict=True):
        assert first < group_start  # each group made after the single create before it


def _wal_frames(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return max(wal.stat().st_size - 32, 0) // FRAME_BYTES if wal.exists() else 0


def test_a_grown_store_writes_few_pages_per_create(tmp_path: Path) -> None:
    """Random ids made each create of a 3,000-Patient store write ≈ 25 log pages; in order ≈ 6."""
    path = tmp_path / "grown.sqlite"
    store = Store(f"sqlite:///{path}", fields=fieldcrypt.PLAIN)
    try:
        for _ in range(3000 // GROUP):
            store.create_new([copy.deepcopy(PATIENT) for _ in range(GROUP)])
        with store.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
        event.listen(
            store.engine, "connect", lambda dbapi, _rec: dbapi.execute("PRAGMA wal_autocheckpoint=0")
        )
        store.engine.dispose()  # every connection from here on leaves the log to grow
        assert _wal_frames(path) == 0
        groups = 20
        for _ in range(groups):
            store.create_new([copy.deepcopy(PATIENT) for _ in range(GROUP)])
        per_create = _wal_frames(path) / (groups * GROUP)
    finally:
        store.close()
    assert per_create < 12, f"{per_create:.1f} log pages written per create"
