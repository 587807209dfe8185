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
