"""``rhip status`` over a fresh data directory, a small real ingest, and a schema left behind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rhip.cli import app
from rhip.config import get_settings

HL7 = (
    "MSH|^~\\&|HIS|{fac}|R|R|20261101083000||ADT^A28^ADT_A05|{fac}{n}|P|2.5\r"
    "PID|1||M{n}^^^{fac}^MR||{name}||{birth}|M\r"
)
#: Two facilities: H1 sends a good and a bad record (quarantined), H2 the same resident again.
FILES = {
    "H1": HL7.format(fac="H1", n=1, name="Li^Ming", birth="19800101")
    + HL7.format(fac="H1", n=2, name="Wang^Fang", birth="19801399"),
    "H2": HL7.format(fac="H2", n=3, name="Li^Ming", birth="19800101"),
}


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty data directory in force for the commands (no store in it yet)."""
    monkeypatch.setenv("RHIP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("RHIP_DATABASE_URL", raising=False)
    return tmp_path / "data"


def rhip(*args: str) -> str:
    get_settings.cache_clear()
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def status(*args: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(rhip("status", "--json", *args))
    return found


def test_a_fresh_data_directory_says_none_yet_and_creates_nothing(data_dir: Path) -> None:
    out = rhip("status")
    assert "Platform status (平台状态)" in out and "none yet" in out
    found = status()
    assert found["store"]["note"] == "none yet (no store in the data directory)"
    assert found["lake"]["note"].startswith("none yet")
    assert [k["current"] for k in found["keys"]] == [None, None, None]
    assert not data_dir.exists() or not any(data_dir.iterdir())


def test_an_empty_store_counts_nothing_yet(data_dir: Path) -> None:
    rhip("db", "upgrade")
    found = status()
    assert found["store"]["at_head"] and found["store"]["resources"] == []
    assert found["ingest"] == {"last_batches": [], "quarantine_open": 0, "quarantine_open_by_facility": {}}
    assert found["mpi"] == {"residents": 0, "source_records": 0, "review_open": 0}
    assert found["audit"]["advice"] == "no events yet"
    out = rhip("status")
    assert "facilities sending 接入机构" in out and "none yet" in out


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def region(request: pytest.FixtureRequest, data_dir: Path, tmp_path: Path) -> tuple[str, ...]:
    """Two facilities ingested and linked; returns the ``--database-url`` arguments to use."""
    url_args: tuple[str, ...] = ()
    if request.param == "postgresql":
        url_args = ("--database-url", str(request.getfixturevalue("fresh_pg_url")))
    for facility, text in FILES.items():
        path = tmp_path / f"{facility}.hl7"
        path.write_text(text, encoding="utf-8")
        rhip("ingest", str(path), *url_args)
    return url_args


def test_status_after_a_small_ingest(region: tuple[str, ...], data_dir: Path) -> None:
    found = status(*region)
    store = found["store"]
    assert store["at_head"] and store["revision"] == store["head"]
    assert {"type": "Patient", "count": 3} in store["resources"]  # two source records and one resident
    batches = {b["facility"]: b for b in found["ingest"]["last_batches"]}
    counts = ("received", "stored", "quarantined", "duplicates")
    assert {f: tuple(b[c] for c in counts) for f, b in batches.items()} == {
        "H1": (2, 1, 1, 0),
        "H2": (1, 1, 0, 0),
    }
    assert found["ingest"]["quarantine_open_by_facility"] == {"H1": 1}
    assert found["mpi"] == {"residents": 1, "source_records": 2, "review_open": 0}
    assert found["surveillance"]["open_alerts"] == 0
    assert found["lake"]["note"] == "none yet (no export: rhip export)"
    out = rhip("status", *region)
    for label in (
        "隔离待重放",
        "1 (H1 1)",
        "Last ingest batch per facility (各机构最近一批)",
        "Resources per type",
    ):
        assert label in out


def test_status_follows_export_writes_and_audit_verification(data_dir: Path, tmp_path: Path) -> None:
    """The lake is due again once the store changes; ``audit verify`` is due once events are added."""
    path = tmp_path / "H1.hl7"
    path.write_text(FILES["H1"], encoding="utf-8")
    rhip("ingest", str(path))
    rhip("export")
    assert status()["lake"]["store_changed_since"] is False
    rhip("users", "add", "ops-admin", "--role", "platform_admin")  # an audited account change
    path.write_text(FILES["H2"], encoding="utf-8")
    rhip("ingest", str(path))
    found = status()
    assert found["lake"]["store_changed_since"] is True
    assert (found["audit"]["events"], found["audit"]["verify_needed"]) == (1, True)
    assert found["audit"]["advice"] == "never verified: run rhip audit verify"
    rhip("audit", "verify")
    audit = status()["audit"]
    assert (audit["verify_needed"], audit["advice"]) == (False, "verified intact up to the head")
    assert audit["last_verified"] is not None
    keys = {k["kind"]: k["current"] for k in status()["keys"]}
    assert keys["hmac"] == 1


def test_a_schema_behind_is_reported_and_left_as_it_is(data_dir: Path) -> None:
    from rhip.store import Store
    from rhip.store.engine import make_engine
    from rhip.store.migrations import current_revision, downgrade

    url = f"sqlite:///{data_dir / 'rhip.sqlite'}"
    data_dir.mkdir(parents=True)
    with Store(url) as store:
        downgrade(store.engine, "0005")
    found = status()
    assert found["store"]["advice"].startswith("at 0005, this version needs")
    assert found["mpi"]["note"].startswith("not read: the schema is behind")
    assert "run rhip db upgrade" in rhip("status")
    engine = make_engine(url)
    with engine.connect() as conn:
        assert current_revision(conn) == "0005"  # status never migrates
    engine.dispose()
