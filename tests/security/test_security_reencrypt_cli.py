"""`rhip keys rotate sm4` then `rhip keys reencrypt`, as an operator runs them on a populated store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rhip.config import Settings
from rhip.fhir.systems import CITIZEN_ID
from rhip.store import Store

CID = "11010519800517012X"


def _rhip(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "RHIP_DATA_DIR": str(tmp_path),
        "RHIP_DATABASE_URL": f"sqlite:///{tmp_path / 'rhip.sqlite'}",
    }
    cmd = [sys.executable, "-c", "from rhip.cli import main; main()", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def test_rotate_then_reencrypt_from_the_command_line(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'rhip.sqlite'}")
    with Store.from_settings(settings) as store:
        patient = {
            "resourceType": "Patient",
            "id": "p1",
            "identifier": [{"system": CITIZEN_ID, "value": CID}],
        }
        store.update("Patient", "p1", patient)
        with store.engine.connect() as conn:
            body = bytes(conn.exec_driver_sql("SELECT body FROM resource").scalar_one())
        assert b"sm4:v1:" in body and CID.encode() not in body  # on by default, keys in data_dir
    rotated = _rhip(tmp_path, "keys", "rotate", "sm4")
    assert rotated.returncode == 0, rotated.stderr
    done = _rhip(tmp_path, "keys", "reencrypt")
    assert done.returncode == 0, done.stderr
    assert "re-encrypted 1 current resources and 1 history versions" in done.stdout
    with Store.from_settings(settings) as store:
        with store.engine.connect() as conn:
            bodies = [bytes(b) for (b,) in conn.exec_driver_sql("SELECT body FROM resource_version")]
        assert all(b"sm4:v2:" in b and b"sm4:v1:" not in b for b in bodies)
        assert store.read("Patient", "p1")["identifier"][0]["value"] == CID
    audit = _rhip(tmp_path, "audit", "verify")
    assert audit.returncode == 0, audit.stdout


def test_reencrypt_covers_the_mpi_and_status_shows_old_keys_may_go(tmp_path: Path) -> None:
    import json

    from rhip.mpi.service import match_and_link
    from rhip.security.audit import iter_entries

    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'rhip.sqlite'}")
    with Store.from_settings(settings) as store:
        for pid in ("p1", "p2"):
            body = {
                "resourceType": "Patient",
                "id": pid,
                "identifier": [{"system": CITIZEN_ID, "value": CID}],
                "telecom": [{"system": "phone", "value": "13912345678"}],
                "birthDate": "1980-05-17",
                "gender": "female",
            }
            store.update("Patient", pid, body)
            match_and_link(store, store.read("Patient", pid))
    for kind in ("sm4", "hmac"):
        assert _rhip(tmp_path, "keys", "rotate", kind).returncode == 0
    before = json.loads(_rhip(tmp_path, "keys", "status", "--json").stdout)
    in_use = {(s["kind"], s["version"]): s for s in before}
    assert in_use[("sm4", 1)]["mpi"] == 2 and in_use[("sm4", 1)]["verdict"] == "in use"
    assert in_use[("hmac", 1)]["mpi"] == 2 and in_use[("hmac", 2)]["current"]
    refused = _rhip(tmp_path, "keys", "reencrypt", "--mpi-batch-size", "0")
    said = " ".join(refused.stderr.replace("│", " ").split())  # the error box may wrap the line
    assert refused.returncode == 2 and "'--mpi-batch-size': Input should be greater than or equal" in said
    done = _rhip(tmp_path, "keys", "reencrypt", "--batch-size", "1", "--mpi-batch-size", "1")
    assert done.returncode == 0, done.stderr
    assert "MPI rows: 2 re-sealed, 0 re-encrypted, 0 missing" in done.stdout
    after = {
        (s["kind"], s["version"]): s for s in json.loads(_rhip(tmp_path, "keys", "status", "--json").stdout)
    }
    for kind in ("sm4", "hmac"):
        assert (after[(kind, 1)]["left"], after[(kind, 1)]["verdict"]) == (0, "may be archived")
        assert after[(kind, 2)]["mpi"] == 2
    table = _rhip(tmp_path, "keys", "status")
    assert table.returncode == 0 and "可归档 may be archived" in table.stdout and "剩余" in table.stdout
    with Store.from_settings(settings) as store:
        details = [
            e.get("detail", "") for _, e in iter_entries(store.engine) if e.get("action") == "key-reencrypt"
        ]
    # p1, p2 and their golden Patient (two versions: written after each link)
    assert details == ["3 current rows, 4 versions; MPI rows: 2 re-sealed, 0 re-encrypted, 0 missing"]
    assert _rhip(tmp_path, "audit", "verify").returncode == 0
