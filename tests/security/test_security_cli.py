"""`rhip users create-demo`, `rhip users list` and `rhip keys rotate` as an operator runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient
from security_seed import seed_resources

from rhip.config import Settings


def _rhip(
    tmp_path: Path, *args: str, extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "RHIP_DATA_DIR": str(tmp_path),
        "RHIP_DATABASE_URL": f"sqlite:///{tmp_path / 'rhip.sqlite'}",
    }
    env.update(extra or {})
    cmd = [sys.executable, "-c", "from rhip.cli import main; main()", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def test_create_demo_accounts_then_log_in(tmp_path: Path) -> None:
    from rhip.api import create_app
    from rhip.store import Store

    url = f"sqlite:///{tmp_path / 'rhip.sqlite'}"
    store = Store(url)
    for body in seed_resources():
        store.update(body["resourceType"], body["id"], body)
    done = _rhip(tmp_path, "users", "create-demo", extra={"RHIP_DEMO_PASSWORD": "demo-pass-1"})
    assert done.returncode == 0, done.stderr
    assert "demo-doctor" in done.stdout and "demo-resident" in done.stdout
    listing = _rhip(tmp_path, "users", "list")
    assert "demo-pass-1" not in listing.stdout and "demo-connector\tsystem\tsystem" in listing.stdout
    app = create_app(store, Settings(data_dir=tmp_path, database_url=url))
    with TestClient(app) as client:
        token = client.post(
            "/auth/token",
            data={"grant_type": "password", "username": "demo-resident", "password": "demo-pass-1"},
        ).json()
        assert token["patient"]
        own = client.get(
            f"/fhir/Patient/{token['patient']}", headers={"Authorization": f"Bearer {token['access_token']}"}
        )
        assert own.status_code == 200
    store.close()
    rotated = _rhip(tmp_path, "keys", "rotate", "sm4")
    assert rotated.returncode == 0 and "version 2" in rotated.stdout
    assert (tmp_path / "keys" / "sm4" / "v2.key").exists()
