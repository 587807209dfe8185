"""The size of the index for ``rhip status``: residents, linked source records, open reviews."""

from __future__ import annotations

import time
from pathlib import Path

from typer.testing import CliRunner

from rhip.cli import app
from rhip.mpi.schema import mpi_review
from rhip.mpi.service import index_counts
from rhip.store import Store

ADT = (
    "MSH|^~\\&|HIS|{fac}|R|R|20261101083000||ADT^A28^ADT_A05|{fac}{n}|P|2.5\r"
    "PID|1||M{n}^^^{fac}^MR||{name}||19800101|{sex}\r"
)


def test_index_counts_after_a_linked_ingest(db_url: str, tmp_path: Path) -> None:
    with Store(db_url) as store:
        assert index_counts(store.engine) == {"residents": 0, "source_records": 0, "review_open": 0}
        for fac, n, name, sex in (
            ("H1", 1, "Li^Ming", "M"),
            ("H2", 2, "Li^Ming", "M"),
            ("H1", 3, "Zhao^Lan", "F"),
        ):
            path = tmp_path / f"{fac}-{n}.hl7"
            path.write_text(ADT.format(fac=fac, n=n, name=name, sex=sex), encoding="utf-8")
            result = CliRunner().invoke(app, ["ingest", str(path), "--database-url", db_url])
            assert result.exit_code == 0, result.output
        counts = index_counts(store.engine)
        assert (counts["source_records"], counts["review_open"]) == (3, 0)
        assert counts["residents"] == 2  # Li Ming at two facilities is one resident
        review = {
            "record_id": "r",
            "candidate_resident_id": "c",
            "weight": 1.0,
            "probability": 0.5,
            "evidence": "{}",
        }
        with store.engine.begin() as conn:
            conn.execute(
                mpi_review.insert(),
                [{**review, "status": s, "created": time.time()} for s in ("open", "closed")],
            )
        assert index_counts(store.engine)["review_open"] == 1
