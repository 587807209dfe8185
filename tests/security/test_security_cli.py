"""`rhip users create-demo`, `rhip users list` and `rhip keys rotate` as an operator runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient
from security_seed import seed_resources

from rhip.config import Settings
from rhip.store import Store


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


def _seeded_store_with_demo_accounts(tmp_path: Path) -> tuple[Store, subprocess.CompletedProcess[str]]:
    """The seed records in a SQLite store under tmp_path, and `rhip users create-demo` run on it."""
    store = Store(f"sqlite:///{tmp_path / 'rhip.sqlite'}")
    for body in seed_resources():
        store.update(body["resourceType"], body["id"], body)
    done = _rhip(tmp_path, "users", "create-demo", extra={"RHIP_DEMO_PASSWORD": "demo-pass-1"})
    assert done.returncode == 0, done.stderr
    return store, done


def test_create_demo_accounts_then_log_in(tmp_path: Path) -> None:
    from rhip.api import create_app

    url = f"sqlite:///{tmp_path / 'rhip.sqlite'}"
    store, done = _seeded_store_with_demo_accounts(tmp_path)
    assert "demo-doctor" in done.stdout and "demo-resident" in done.stdout
    listing = _rhip(tmp_path, "users", "list")
    assert "demo-pass-1" not in listing.stdout and "demo-connector\tsystem\tsystem" in listing.stdout
    rows = [line.split("\t") for line in listing.stdout.splitlines()]
    assert rows[0] == ["username", "kind", "role", "patient", "practitioner", "organization", "area"]
    doctor = next(row for row in rows if row[0] == "demo-doctor")
    assert doctor[2] == "practitioner" and doctor[4] != "-" and doctor[5] != "-", doctor
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
    from rhip.security.audit import iter_entries, verify_chain

    engine = Store(url).engine
    actions = [e["action"] for _, e in iter_entries(engine)]
    assert "account-create" in actions and "key-rotate" in actions and "login" in actions
    assert verify_chain(engine).ok


def test_sign_and_verify_a_document_from_the_command_line(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from rhip.cli import app

    runner = CliRunner()
    doc = {"resourceType": "Composition", "id": "c1", "status": "final", "title": "出院小结"}
    (tmp_path / "doc.json").write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    made = runner.invoke(app, ["keys", "sm2-generate", "--out", str(tmp_path / "k")])
    assert made.exit_code == 0, made.output
    key = str(tmp_path / "k" / "sm2.key")
    signed = runner.invoke(
        app,
        ["keys", "sign-document", str(tmp_path / "doc.json"), "--key", key, "--signer", "Practitioner/p1"],
    )
    assert signed.exit_code == 0, signed.output
    (tmp_path / "prov.json").write_text(signed.stdout, encoding="utf-8")
    verify = ["keys", "verify-document", str(tmp_path / "doc.json"), str(tmp_path / "prov.json")]
    ok = runner.invoke(app, [*verify, "--public-key", str(tmp_path / "k" / "sm2.pub")])
    assert ok.exit_code == 0 and "signature valid" in ok.stdout
    (tmp_path / "doc.json").write_text(json.dumps({**doc, "title": "changed"}), encoding="utf-8")
    bad = runner.invoke(app, [*verify, "--public-key", str(tmp_path / "k" / "sm2.pub")])
    assert bad.exit_code == 1 and "INVALID" in bad.stdout


def test_demo_connector_writes_for_its_own_facility_only(tmp_path: Path) -> None:
    """The demo connector (bound to the demo facility) keeps its writes; another facility's are refused."""
    from rhip.api import create_app
    from rhip.security.demo import discover

    url = f"sqlite:///{tmp_path / 'rhip.sqlite'}"
    store, _ = _seeded_store_with_demo_accounts(tmp_path)
    found = discover(store.engine)
    own, patient = str(found["organization"]), str(found["patient"])
    other = next(o for o in ("orgA", "orgB") if o != own)
    app = create_app(store, Settings(data_dir=tmp_path, database_url=url))
    with TestClient(app) as client:
        token = client.post(
            "/auth/token",
            data={"grant_type": "client_credentials", "scope": "system/*.cruds"},
            auth=("demo-connector", "demo-pass-1"),
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}", "content-type": "application/fhir+json"}
        encounter = {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": f"Patient/{patient}"},
            "serviceProvider": {"reference": f"Organization/{own}"},
        }
        created = client.post("/fhir/Encounter", json=encounter, headers=headers)
        assert created.status_code == 201, created.text
        again = {**created.json(), "status": "cancelled"}
        assert client.put(f"/fhir/Encounter/{again['id']}", json=again, headers=headers).status_code == 200
        assert client.get(f"/fhir/Encounter?service-provider=Organization/{other}", headers=headers).json()[
            "total"
        ]
        elsewhere = {**encounter, "serviceProvider": {"reference": f"Organization/{other}"}}
        refused = client.post("/fhir/Encounter", json=elsewhere, headers=headers)
        assert refused.status_code == 403 and other in refused.text and own in refused.text
    store.close()


def test_document_signing_on_wrong_files_and_keys(tmp_path: Path) -> None:
    """A missing key file, a file that is not JSON or a public key that is not hex were
    FileNotFoundError, JSONDecodeError and ValueError tracebacks."""
    from typer.testing import CliRunner

    from rhip.cli import app

    def usage_error(*args: str) -> str:
        result = CliRunner().invoke(app, ["keys", *args], env={"COLUMNS": "300"})
        assert result.exit_code == 2, result.output  # a usage message, not an exception
        return " ".join(result.output.replace("│", " ").split())

    (tmp_path / "doc.json").write_text('{"resourceType": "Composition", "id": "c1"}', encoding="utf-8")
    (tmp_path / "notes.json").write_text("{draft", encoding="utf-8")
    sign = ["sign-document", str(tmp_path / "doc.json"), "--signer", "Practitioner/p1"]
    assert "does not exist" in usage_error(*sign, "--key", str(tmp_path / "sm2.key"))
    assert "holds no SM2 private key" in usage_error(*sign, "--key", str(tmp_path / "notes.json"))
    verify = ["verify-document", str(tmp_path / "notes.json"), str(tmp_path / "doc.json")]
    assert "neither an SM2 public key in hex" in usage_error(*verify, "--public-key", "not-a-key")
    assert f"{tmp_path / 'notes.json'} is not JSON" in usage_error(*verify, "--public-key", "ab" * 32)


def test_a_resident_account_without_its_patient_is_refused(tmp_path: Path, db_url: str) -> None:
    """``rhip users add X --role resident`` without ``--patient`` created an account bound to nobody."""
    import pytest

    from rhip.errors import InvalidRequest
    from rhip.security.demo import create_demo_accounts
    from rhip.security.users import Account, create_account, list_accounts

    refused = _rhip(
        tmp_path, "users", "add", "li.lei", "--role", "resident", extra={"RHIP_DATABASE_URL": db_url}
    )
    assert refused.returncode == 2, refused.stderr
    words = " ".join(refused.stderr.replace("│", " ").split())  # the usage box wraps at any width
    assert "a resident account must be bound to its Patient" in words, refused.stderr
    assert "--patient" in words and "Traceback" not in refused.stderr
    store = Store(db_url)
    try:
        with pytest.raises(InvalidRequest, match="bound to its Patient"):
            create_account(store.engine, Account("li.lei", "person", "resident"), "s3cret-pw")
        # the demo on a store without residents creates no unbound resident account
        rows = create_demo_accounts(store.engine, "demo-pass-1")
        assert "demo-resident" not in [r[0] for r in rows] and "demo-admin" in [r[0] for r in rows]
        assert all(a.patient_id for a in list_accounts(store.engine) if a.role == "resident")
        bound = _rhip(
            tmp_path,
            "users",
            "add",
            "li.lei",
            "--role",
            "resident",
            "--patient",
            "pat1",
            extra={"RHIP_DATABASE_URL": db_url, "RHIP_NEW_SECRET": "s3cret-pw"},
        )
        assert bound.returncode == 0, bound.stderr
        # it printed 'li.lei<TAB>resident<TAB>(from RHIP_NEW_SECRET)': no word on what each field was
        assert bound.stdout.strip() == (
            "account li.lei created, role resident, POST /auth/token with password; "
            "secret: the one in RHIP_NEW_SECRET"
        )
        generated = _rhip(
            tmp_path, "users", "add", "hub", "--role", "system", extra={"RHIP_DATABASE_URL": db_url}
        )
        assert generated.returncode == 0, generated.stderr
        line = generated.stdout.strip()
        assert line.startswith("account hub created, role system, POST /auth/token with client_credentials")
        assert line.endswith("(shown only now; keep it, it is stored hashed)")
    finally:
        store.close()
