"""The newest batch of each facility, as ``rhip status`` shows it, from real ingests."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from rhip.cli import app
from rhip.ingest.batches import latest_per_facility
from rhip.store import Store

ADT = (
    "MSH|^~\\&|HIS|{fac}|R|R|20261101083000||ADT^A28^ADT_A05|{fac}{n}|P|2.5\r"
    "PID|1||M{n}^^^{fac}^MR||Li^Ming||{birth}|M\r"
)


def ingest(url: str, path: Path, *messages: str) -> None:
    path.write_text("".join(messages), encoding="utf-8")
    result = CliRunner().invoke(app, ["ingest", str(path), "--no-link", "--database-url", url])
    assert result.exit_code == 0, result.output


def test_latest_batch_per_facility_with_its_counts(db_url: str, tmp_path: Path) -> None:
    with Store(db_url) as store:
        assert latest_per_facility(store.engine) == []
        first = ADT.format(fac="B1", n=1, birth="19800101")
        bad = ADT.format(fac="B1", n=2, birth="19801399")  # no such day: quarantined
        ingest(db_url, tmp_path / "b1.hl7", first, bad)
        ingest(db_url, tmp_path / "a2.hl7", ADT.format(fac="A2", n=3, birth="19700101"))
        ingest(db_url, tmp_path / "b1-again.hl7", first)  # B1's newest batch: one duplicate
        latest = latest_per_facility(store.engine)
    counts = [
        (
            r["facility"],
            r["location"].rsplit("/", 1)[-1],
            r["received"],
            r["stored"],
            r["quarantined"],
            r["duplicates"],
        )
        for r in latest
    ]
    assert counts == [("A2", "a2.hl7", 1, 1, 0, 0), ("B1", "b1-again.hl7", 1, 0, 0, 1)]
    assert all(r["finished"].endswith("+00:00") for r in latest)
