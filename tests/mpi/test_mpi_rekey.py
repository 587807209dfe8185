"""Key rotation that finishes: ``rhip keys reencrypt`` moves FHIR bodies and MPI rows to the newest
keys, ``rhip keys status`` counts what is left, and the old key files can then be moved away.

Real stores on SQLite and PostgreSQL, each with its own key folder (the old keys are moved out of it).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from mpi_helpers import patient

from rhip.errors import InvalidRequest
from rhip.fhir import systems
from rhip.fhir.identifiers import make_citizen_id
from rhip.mpi.rekey import reencrypt_mpi, rows_to_examine
from rhip.mpi.schema import MPI_TABLES, ensure_schema, mpi_card, mpi_key, mpi_record
from rhip.mpi.service import match_and_link, resolve_card
from rhip.security.crypto import FieldCipher
from rhip.security.keys import KeyRing
from rhip.security.rotation import VersionStatus, key_status
from rhip.store import Store
from rhip.store.fieldcrypt import FieldCrypt
from rhip.store.reencrypt import reencrypt

CID = make_citizen_id("370102", date(1985, 3, 7), 123, "male")
OTHER_CID = make_citizen_id("110105", date(1990, 6, 1), 57, "female")
PHONE = "13912345678"
OTHER_PHONE = "13700001111"
HOME = "历下区花园路8号"


def _store(db_url: str, keys: Path, *, migrate: bool = True) -> Store:
    """A store whose keys live in ``keys`` (a fresh key ring: nothing cached from earlier opens)."""
    store = Store(db_url, fields=FieldCrypt(FieldCipher(KeyRing(keys))), migrate=migrate)
    ensure_schema(store.engine)
    return store


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """The data directory holding this test's key folder."""
    folder = tmp_path / "data"
    folder.mkdir()
    return folder


@pytest.fixture
def linked(db_url: str, keys: Path) -> Iterator[Store]:
    """Two residents linked under key version 1: 张伟 on three records (one since deleted), 李娜 on one."""
    store = _store(db_url, keys)
    bodies = [
        patient("p1", ("张", "伟"), "1985-03-07", "male", cid=CID, phone=PHONE, address=HOME),
        patient("p2", ("章", "卫"), "1985-03-07", "male", cid=CID),
        patient("p3", ("张", "伟"), "1985-03-07", "male", phone=PHONE, address=HOME),
        patient("p4", ("李", "娜"), "1990-06-01", "female", cid=OTHER_CID, phone=OTHER_PHONE),
        patient("p5", ("张", "伟"), "1985-03-07", "male", cid=CID, cards=[("urn:mrn:h5", "m5")]),
    ]
    for body in bodies:
        store.update("Patient", body["id"], body)
        match_and_link(store, store.read("Patient", body["id"]))
    store.update("Patient", "p1", {**bodies[0], "active": True})  # a history version
    match_and_link(store, store.read("Patient", "p1"))
    store.delete("Patient", "p5")  # its MPI row stays
    try:
        yield store
    finally:
        store.close()


def _links(store: Store) -> dict[str, str]:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(mpi_record.c.record_id, mpi_record.c.resident_id)).all()
    return {r.record_id: r.resident_id for r in rows}


def _mpi_text(store: Store) -> str:
    """Every value of every MPI table, read with raw SQL."""
    with store.engine.connect() as conn:
        return " ".join(
            str(v)
            for t in MPI_TABLES
            for row in conn.execute(sa.text(f"SELECT * FROM {t.name}"))
            for v in row
        )


def _left(statuses: list[VersionStatus], kind: str) -> dict[int | None, int | None]:
    return {s.version: s.left for s in statuses if s.kind == kind}


def _live_bodies(store: Store) -> int:
    """Stored Patient bodies, current and history, deletes left out (what re-encryption looks at)."""
    with store.engine.connect() as conn:
        sql = "SELECT count(*) FROM {} WHERE res_type = 'Patient' AND NOT deleted"
        return sum(
            int(conn.execute(sa.text(sql.format(t))).scalar_one()) for t in ("resource", "resource_version")
        )


def _rotate(store: Store, *kinds: str) -> None:
    ring = store.fields.cipher.keys if store.fields.cipher is not None else None
    assert ring is not None
    for kind in kinds:
        ring.rotate(kind)


def test_rotate_reencrypt_status_then_old_keys_can_go(linked: Store, db_url: str, keys: Path) -> None:
    residents = _links(linked)
    assert residents["p1"] == residents["p2"] == residents["p3"] == residents["p5"] != residents["p4"]
    _rotate(linked, "sm4", "hmac")
    before = key_status(linked)
    assert _left(before, "sm4")[1] and _left(before, "hmac")[1]  # everything still under v1
    assert {s.verdict for s in before if s.version == 1 and s.kind != "jwt"} == {"in use"}
    assert rows_to_examine(linked.engine) == 5

    reencrypt(linked)
    done = reencrypt_mpi(linked, batch_size=2)
    assert (done.resealed, done.reencrypted, done.missing) == (5, 0, 0)  # p5 from its last live version
    assert _links(linked) == residents  # a key change moves no link
    statuses = key_status(linked)
    for kind in ("sm4", "hmac"):
        assert _left(statuses, kind)[1] == 0
        assert next(s for s in statuses if s.kind == kind and s.version == 1).verdict == "may be archived"
        assert next(s for s in statuses if s.kind == kind and s.version == 2).current
        assert None not in _left(statuses, kind)  # nothing in clear, no pseudonym of an unknown key
    assert "sm4:v1:" not in _mpi_text(linked)
    again = reencrypt_mpi(linked)
    assert (again.resealed, again.reencrypted, again.skipped) == (0, 0, 5)

    linked.close()
    _archive_old_keys(keys)
    _readable_and_found_without_old_keys(_store(db_url, keys, migrate=False), residents)


def _archive_old_keys(keys: Path) -> None:
    """Move the version 1 SM4 and HMAC keys out of the key folder, as an operator would."""
    archive = keys / "archive"
    for kind in ("sm4", "hmac"):
        (archive / kind).mkdir(parents=True)
        shutil.move(keys / "keys" / kind / "v1.key", archive / kind / "v1.key")


def _readable_and_found_without_old_keys(store: Store, residents: dict[str, str]) -> None:
    """Every record, version and MPI row works with only the v2 keys on disk."""
    try:
        assert KeyRing(store.fields.cipher.keys.root.parent).versions("sm4") == [2]  # type: ignore[union-attr]
        assert store.read("Patient", "p1")["identifier"][0]["value"] == CID
        assert store.vread("Patient", "p1", 1)["telecom"][0]["value"] == PHONE
        assert store.vread("Patient", "p5", 1)["identifier"][0]["value"] == CID
        found = store.search("Patient", [("identifier", f"{systems.CITIZEN_ID}|{CID}")], count=10).matches
        assert sorted(m["id"] for m in found) == ["p1", "p2"]
        by_phone = store.search("Patient", [("phone", PHONE)], count=10).matches
        assert sorted(m["id"] for m in by_phone if m["id"].startswith("p")) == ["p1", "p3"]
        golden = store.read("Patient", residents["p1"])
        assert golden["telecom"] == [{"system": "phone", "value": PHONE}]
        with store.engine.connect() as conn:
            assert resolve_card(conn, f"{systems.CITIZEN_ID}|{CID}") == residents["p1"]
            assert resolve_card(conn, "urn:mrn:h5|m5") == residents["p1"]
        # matching: a new record of 张伟 is found through the re-sealed citizen-ID and phone keys
        store.update("Patient", "p6", patient("p6", ("张", "炜"), "1985-03-07", "male", cid=CID))
        by_cid = match_and_link(store, store.read("Patient", "p6"))
        assert (by_cid.resident_id, by_cid.rule) == (residents["p1"], "citizen-id")
        store.update("Patient", "p7", patient("p7", ("李", "娜"), "1990-06-01", "female", phone=OTHER_PHONE))
        by_phone_link = match_and_link(store, store.read("Patient", "p7"))
        assert by_phone_link.resident_id == residents["p4"]
        evidence = next(c for c in by_phone_link.candidates if c.record_id == "p4").evidence
        assert evidence["phone"][0] == "exact"
    finally:
        store.close()


def test_sm4_rotation_alone_reencrypts_tokens_and_keeps_pseudonyms(linked: Store) -> None:
    with linked.engine.connect() as conn:
        keys_before = sorted(conn.execute(sa.select(mpi_key.c.bkey, mpi_key.c.record_id)).all())
        cards_before = sorted(conn.execute(sa.select(mpi_card.c.value, mpi_card.c.record_id)).all())
    _rotate(linked, "sm4")
    done = reencrypt_mpi(linked)
    assert (done.resealed, done.reencrypted, done.skipped) == (0, 5, 0)  # every row has a phone or an ID
    with linked.engine.connect() as conn:
        assert sorted(conn.execute(sa.select(mpi_key.c.bkey, mpi_key.c.record_id)).all()) == keys_before
        assert sorted(conn.execute(sa.select(mpi_card.c.value, mpi_card.c.record_id)).all()) == cards_before
    assert "sm4:v1:" not in _mpi_text(linked)
    reencrypt(linked)
    assert _left(key_status(linked), "sm4")[1] == 0
    golden = linked.read("Patient", _links(linked)["p1"])
    assert golden["telecom"] == [{"system": "phone", "value": PHONE}]  # decrypts under v2


def test_hmac_rotation_alone_needs_no_force(linked: Store) -> None:
    _rotate(linked, "hmac")
    first = reencrypt(linked)
    assert (first.current + first.versions, first.skipped) == (_live_bodies(linked), 0)
    assert reencrypt(linked).skipped == first.total  # a second run finds nothing left
    assert reencrypt_mpi(linked).resealed == 5
    statuses = key_status(linked)
    assert _left(statuses, "hmac") == {1: 0, 2: _left(statuses, "hmac")[2]}
    assert _left(statuses, "sm4") == {1: _left(statuses, "sm4")[1]}  # untouched: one version only


_CHILD = """
import os, signal, sys
from pathlib import Path
from rhip.mpi.rekey import reencrypt_mpi
from rhip.security.crypto import FieldCipher
from rhip.security.keys import KeyRing
from rhip.store import Store
from rhip.store.fieldcrypt import FieldCrypt
from rhip.store.reencrypt import reencrypt

url, keys, stage = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
store = Store(url, fields=FieldCrypt(FieldCipher(KeyRing(keys))), migrate=False)
die = lambda n: os.kill(os.getpid(), signal.SIGKILL)
reencrypt(store, batch_size=1, on_rows=die if stage == "fhir" else None)
reencrypt_mpi(store, batch_size=1, on_rows=die)
"""


@pytest.mark.parametrize("stage", ["fhir", "mpi"])
def test_a_killed_run_is_finished_by_the_next_without_redoing_anything(
    linked: Store, db_url: str, keys: Path, stage: str
) -> None:
    _rotate(linked, "sm4", "hmac")
    bodies = _live_bodies(linked)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, db_url, str(keys), stage], env=env, capture_output=True, timeout=120
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    fhir = reencrypt(linked)
    mpi = reencrypt_mpi(linked)
    if stage == "fhir":  # killed after the first committed body: every other one is left to do
        assert (fhir.current + fhir.versions, fhir.skipped) == (bodies - 1, 1)
        assert mpi.resealed == 5
    else:  # the bodies were done, and the first MPI row
        assert (fhir.current, fhir.versions) == (0, 0)
        assert (mpi.resealed, mpi.skipped) == (4, 1)
    statuses = key_status(linked)
    assert _left(statuses, "sm4")[1] == _left(statuses, "hmac")[1] == 0


def test_rows_cleared_by_revision_0006_are_sealed_again(linked: Store) -> None:
    residents = _links(linked)
    with linked.engine.begin() as conn:
        conn.execute(sa.update(mpi_record).values(cid=None, cid_raw=None, phone=None, key_version=None))
        conn.execute(sa.delete(mpi_key).where(mpi_key.c.bkey.like("c:%") | mpi_key.c.bkey.like("p:%")))
        conn.execute(sa.delete(mpi_card).where(mpi_card.c.system == systems.CITIZEN_ID))
    assert _left(key_status(linked), "hmac")[None] == 5
    assert reencrypt_mpi(linked).resealed == 5
    assert _links(linked) == residents
    with linked.engine.connect() as conn:
        assert resolve_card(conn, f"{systems.CITIZEN_ID}|{CID}") == residents["p1"]
        assert conn.execute(sa.select(sa.func.count()).where(mpi_record.c.cid.is_not(None))).scalar_one() == 4
    assert None not in _left(key_status(linked), "hmac")


@pytest.mark.parametrize(("batch_size", "pages"), [(2, [2, 2, 1]), (3, [3, 2]), (5, [5]), (2000, [5])])
def test_pages_of_any_size_reseal_every_row_once(linked: Store, batch_size: int, pages: list[int]) -> None:
    residents = _links(linked)
    _rotate(linked, "sm4", "hmac")
    heard: list[int] = []
    done = reencrypt_mpi(linked, batch_size=batch_size, on_rows=heard.append)
    assert heard == pages  # the last page holds what is left over
    assert (done.resealed, done.reencrypted, done.skipped, done.missing) == (5, 0, 0, 0)
    assert _links(linked) == residents
    assert "sm4:v1:" not in _mpi_text(linked)
    with linked.engine.connect() as conn:
        assert set(conn.execute(sa.select(mpi_record.c.key_version)).scalars()) == {2}


def test_an_empty_mpi_has_nothing_to_do(db_url: str, keys: Path) -> None:
    store = _store(db_url, keys)
    try:
        _rotate(store, "sm4", "hmac")
        heard: list[int] = []
        assert reencrypt_mpi(store, on_rows=heard.append).total == 0
        assert heard == []
        assert rows_to_examine(store.engine) == 0
    finally:
        store.close()


def test_a_batch_size_below_one_is_refused(linked: Store) -> None:
    """Regression: batch_size 0 ended the run at once, as if there were nothing to do."""
    with pytest.raises(InvalidRequest, match="batch_size must be at least 1"):
        reencrypt_mpi(linked, batch_size=0)


def _dml(store: Store) -> list[str]:
    """The INSERT, UPDATE and DELETE statements the store's engine sends from now on (one per executemany)."""
    sent: list[str] = []

    def heard(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if statement.lstrip().split(" ", 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            sent.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", heard)
    return sent


def test_a_page_is_written_in_a_few_statements_whatever_its_rows(linked: Store) -> None:
    """Regression: each re-sealed row cost six statements of its own."""
    _rotate(linked, "sm4", "hmac")
    sent = _dml(linked)
    assert reencrypt_mpi(linked, batch_size=5).resealed == 5
    assert len(sent) <= 7  # the write lock, three deletes, three bulk inserts


def test_rows_under_the_newest_keys_are_left_alone_and_matching_goes_on(linked: Store) -> None:
    """A record linked in the middle of the run (between pages) is found and later skipped, not rewritten."""
    residents = _links(linked)
    _rotate(linked, "sm4", "hmac")
    arrivals: list[Any] = []

    def link_one_between_pages(_rows: int) -> None:
        if not arrivals:  # p1 and p2 are re-sealed: the new record finds them by citizen ID
            linked.update("Patient", "p6", patient("p6", ("张", "炜"), "1985-03-07", "male", cid=CID))
            arrivals.append(match_and_link(linked, linked.read("Patient", "p6")))
            arrivals.append(_row(linked, "p6"))

    done = reencrypt_mpi(linked, batch_size=2, on_rows=link_one_between_pages)
    assert (arrivals[0].resident_id, arrivals[0].rule) == (residents["p1"], "citizen-id")
    assert (done.resealed, done.skipped) == (5, 1)
    assert _row(linked, "p6") == arrivals[1]  # its SM4 tokens (random nonces) were not rewritten
    sent = _dml(linked)
    again = reencrypt_mpi(linked, batch_size=2)
    assert (again.resealed, again.reencrypted, again.skipped) == (0, 0, 6)
    assert sent == []  # nothing to do: no write transaction at all


def _row(store: Store, record_id: str) -> tuple[Any, ...]:
    with store.engine.connect() as conn:
        return tuple(conn.execute(sa.select(mpi_record).where(mpi_record.c.record_id == record_id)).one())


def test_pages_mixing_resealed_reencrypted_and_missing_rows(linked: Store) -> None:
    """One page holds every kind of row: each is handled as it alone would be."""
    residents = _links(linked)
    _rotate(linked, "hmac")
    assert reencrypt_mpi(linked).resealed == 5
    _rotate(linked, "sm4")  # every row now needs its SM4 tokens alone re-encrypted...
    with linked.engine.begin() as conn:  # ...but p1 and p3 also their pseudonyms, and p4 has no source
        conn.execute(
            sa.update(mpi_record).where(mpi_record.c.record_id.in_(["p1", "p3", "p4"])).values(key_version=1)
        )
        for table in ("resource", "resource_version"):
            conn.execute(sa.text(f"DELETE FROM {table} WHERE res_type = 'Patient' AND res_id = 'p4'"))
    p4 = _row(linked, "p4")
    done = reencrypt_mpi(linked, batch_size=5)
    assert (done.resealed, done.reencrypted, done.skipped, done.missing) == (2, 2, 0, 1)
    assert _row(linked, "p4") == p4  # left as it is, for `rhip link --all` to drop
    assert _links(linked) == residents
    for record_id in ("p1", "p2", "p3", "p5"):
        row = _row(linked, record_id)
        assert 2 in row and not any(str(v).startswith("sm4:v1:") for v in row)  # key_version 2, v2 tokens
    with linked.engine.connect() as conn:
        assert resolve_card(conn, f"{systems.CITIZEN_ID}|{CID}") == residents["p1"]


_MID_PAGE_CHILD = """
import os, signal, sys
from pathlib import Path
import rhip.mpi.link as link
from rhip.mpi.rekey import reencrypt_mpi
from rhip.security.crypto import FieldCipher
from rhip.security.keys import KeyRing
from rhip.store import Store
from rhip.store.fieldcrypt import FieldCrypt

url, keys = sys.argv[1], Path(sys.argv[2])
store = Store(url, fields=FieldCrypt(FieldCipher(KeyRing(keys))), migrate=False)
insert, pages = link.bulk_insert, []

def insert_then_die(conn, table, columns, rows):
    insert(conn, table, columns, rows)
    if table.name == "mpi_record":
        pages.append(rows)
        if len(pages) == 2:  # page two's records rewritten, its keys and cards deleted: die here
            os.kill(os.getpid(), signal.SIGKILL)

link.bulk_insert = insert_then_die
reencrypt_mpi(store, batch_size=2)
"""


def test_a_run_killed_inside_a_page_leaves_it_as_it_was(linked: Store, db_url: str, keys: Path) -> None:
    """kill -9 between a page's bulk writes: the page rolls back whole, and the next run finishes it."""
    residents = _links(linked)
    before = _index(linked)
    _rotate(linked, "sm4", "hmac")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.run(
        [sys.executable, "-c", _MID_PAGE_CHILD, db_url, str(keys)], env=env, capture_output=True, timeout=120
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    assert len(_index(linked)[0]) == len(before[0])  # no blocking key lost with the killed page
    done = reencrypt_mpi(linked, batch_size=2)
    assert (done.resealed, done.skipped) == (3, 2)  # page one was committed before the kill
    assert _links(linked) == residents
    after = _index(linked)
    assert [len(rows) for rows in after] == [len(rows) for rows in before]
    assert _plain_keys(after[0]) == _plain_keys(before[0])
    reencrypt(linked)
    linked.close()
    _archive_old_keys(keys)
    _readable_and_found_without_old_keys(_store(db_url, keys, migrate=False), residents)


def _index(store: Store) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """Every blocking key and card row, sorted."""
    with store.engine.connect() as conn:
        bkeys = sorted(conn.execute(sa.select(mpi_key.c.bkey, mpi_key.c.record_id)).tuples())
        cards = sorted(
            conn.execute(sa.select(mpi_card.c.system, mpi_card.c.value, mpi_card.c.record_id)).tuples()
        )
    return bkeys, cards


def _plain_keys(bkeys: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The blocking keys that are not pseudonyms (names, birth dates): the same under any key."""
    pseudonyms = ("c:", "p:", f"k:{systems.CITIZEN_ID}|")
    return [k for k in bkeys if not k[0].startswith(pseudonyms)]
