"""The chain head and the record of the last intact verification, behind ``rhip status``."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from rhip.cli import app
from rhip.security.audit import AuditRecord, chain_head, record_now, verify_chain
from rhip.security.audit_checks import Verified, last_verified, record_verified, verify_advice
from rhip.security.schema import GENESIS
from rhip.store import Store


def event(n: int) -> AuditRecord:
    return AuditRecord(
        actor=f"os:tester{n}", role="operator", action="policy", outcome="0", purpose="HSYSADMIN"
    )


def test_chain_head_follows_the_appended_events(db_url: str) -> None:
    with Store(db_url) as store:
        assert chain_head(store.engine) == (0, GENESIS)
        for n in range(3):
            record_now(store.engine, event(n))
        report = verify_chain(store.engine)
        assert chain_head(store.engine) == (3, report.head_hash)


@pytest.mark.parametrize(
    ("head", "last", "due", "reason"),
    [
        ((0, GENESIS), None, False, "no events yet"),
        ((4, "h4"), None, True, "never verified: run rhip audit verify"),
        ((4, "h4"), Verified(4, "h4", 0.0), False, "verified intact up to the head"),
        (
            (6, "h6"),
            Verified(4, "h4", 0.0),
            True,
            "2 events since the last verification: run rhip audit verify",
        ),
        (
            (4, "other"),
            Verified(4, "h4", 0.0),
            True,
            "the head no longer extends the verified one: run rhip audit verify now",
        ),
        (
            (3, "h3"),
            Verified(4, "h4", 0.0),
            True,
            "the head no longer extends the verified one: run rhip audit verify now",
        ),
    ],
)
def test_verify_advice(head: tuple[int, str], last: Verified | None, due: bool, reason: str) -> None:
    assert verify_advice(head, last) == (due, reason)


def test_record_verified_round_trips(tmp_path: Path) -> None:
    assert last_verified(tmp_path) is None
    record_verified(tmp_path, 7, "abc")
    found = last_verified(tmp_path)
    assert found is not None and (found.seq, found.hash) == (7, "abc") and found.at > 0


def test_audit_verify_records_the_intact_head(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``rhip audit verify`` leaves the head it found intact for ``rhip status`` to compare."""
    monkeypatch.setenv("RHIP_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("RHIP_DATABASE_URL", raising=False)
    with Store(f"sqlite:///{tmp_path / 'rhip.sqlite'}") as store:
        record_now(store.engine, event(1))
        head = chain_head(store.engine)
    result = CliRunner().invoke(app, ["audit", "verify"])
    assert result.exit_code == 0, result.output
    found = last_verified(tmp_path)
    assert found is not None and (found.seq, found.hash) == head
