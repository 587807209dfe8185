"""``rhip link`` (real-time catch-up or full batch re-link) and ``rhip mpi ...`` (review and corrections)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

mpi_app = typer.Typer(
    help="Master patient index: residents, review queue and corrections.", no_args_is_help=True
)


ACTOR_HELP = "Name recorded with the change in the audit trail."
REVIEW_HELP = "Review item id (the id of `rhip mpi review`)."
RECORD_HELP = "Source Patient id: Patient/ID as `rhip mpi review` prints it, or ID."
RESIDENT_HELP = "Resident id (its golden Patient): Patient/ID or ID."
CHANGE_HELP = "Change id, as printed by the correction that made it ('change N; ...')."


def _bare(patient_id: str) -> str:
    """A record or resident id as the MPI keeps it: ``Patient/ID`` (how review items and
    references show it) and ``ID`` name the same one."""
    return patient_id.removeprefix("Patient/")


def _store() -> Any:
    from rhip.store import Store

    return Store.from_settings()


#: How ``rhip link`` names each outcome of :func:`rhip.mpi.link.match_and_link`.
_OUTCOME_WORDS = {
    "link": "joined a resident",
    "new": "a new resident",
    "review": "for review (`rhip mpi review`)",
    "unchanged": "unchanged",
}


def _link_summary(count: int, outcomes: dict[str, int]) -> str:
    """One line on what ``rhip link`` did, in words: it printed the outcome dict (``{}``, or
    ``{'new': 3, 'link': 2}``), which told a newcomer little."""
    if not count:
        return (
            "linked 0 new records: every stored source Patient is linked already "
            "(`rhip link --all` re-links all)"
        )
    parts = [f"{n:,} {_OUTCOME_WORDS.get(name, name)}" for name, n in sorted(outcomes.items())]
    return f"linked {count:,} new records: {', '.join(parts)}"


def _print_accuracy(store: Any, truth: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from rhip.mpi.truth import accuracy_against_truth

    if not truth.exists():
        raise typer.BadParameter(f"{truth}: no such truth file or folder")
    acc = accuracy_against_truth(store.engine, truth)
    table = Table(title="linkage against the truth 匹配准确性")
    table.add_column("measure 指标")
    table.add_column("value 数值", justify="right")
    for key, value in acc.as_dict().items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console = Console()
    console.print(table)
    console.print(  # the measures' names alone tell a newcomer little; under the table, full width
        "precision: share of linked record pairs that are one person; recall: share of one "
        "person's record pairs that are linked (pair_: over pairs, bcubed_: averaged per record). "
        "wrong_link_share: residents holding records of two or more persons; split_share: persons "
        "spread over two or more residents.",
        markup=False,
    )


def link_cmd(
    all_records: bool = typer.Option(False, "--all", help="Re-link every source record in one Splink batch."),
    retrain: bool = typer.Option(
        False, "--train", help="With --all: re-estimate the model on these records first."
    ),
    backend: str = typer.Option("duckdb", "--backend", help="Batch engine: duckdb or spark."),
    truth: Path | None = typer.Option(
        None, "--truth", help="Generated region folder or patient_links.csv to score against."
    ),
    golden: bool = typer.Option(True, "--golden/--no-golden", help="Rewrite golden Patients after a batch."),
) -> None:
    """Link source Patients to residents: new ones on arrival order, or all of them with --all."""
    from rich.progress import Progress

    from rhip.mpi.service import match_and_link, ready

    store = _store()
    ready(store.engine)
    if all_records:
        from rhip.mpi.relink import relink_all

        spark = None
        if backend == "spark":
            from rhip.mpi.spark import local_session

            spark = local_session()
        with Progress(transient=True) as progress:
            progress.add_task("linking all records (Splink)", total=None)
            report = relink_all(store, retrain=retrain, backend=backend, spark=spark, golden=golden)
        typer.echo(json.dumps(report.__dict__, ensure_ascii=False))
    else:
        from sqlalchemy import select

        from rhip.mpi.golden import is_golden
        from rhip.mpi.schema import mpi_record

        with store.engine.connect() as conn:
            known = {r[0] for r in conn.execute(select(mpi_record.c.record_id))}
        todo = [
            b for b, rid, _, _ in store.iter_current("Patient") if b and rid not in known and not is_golden(b)
        ]
        outcomes: dict[str, int] = {}
        with Progress() as progress:
            task = progress.add_task("matching new records", total=len(todo))
            for patient in todo:
                decision = match_and_link(store, patient)
                outcomes[decision.outcome] = outcomes.get(decision.outcome, 0) + 1
                progress.advance(task)
        typer.echo(_link_summary(len(todo), outcomes))
    if truth is not None:
        _print_accuracy(store, truth)


@mpi_app.command("resident")
def resident_cmd(
    card: str = typer.Argument(..., help="system|value of any card, or the virtual health card"),
) -> None:
    """Show the resident holding a card and its linked records."""
    from rhip.mpi.service import ready, resident_summary, resolve_card

    store = _store()
    ready(store.engine)
    with store.engine.connect() as conn:
        typer.echo(json.dumps(resident_summary(conn, resolve_card(conn, card)), ensure_ascii=False, indent=2))


@mpi_app.command("review")
def review_cmd(
    status: str = typer.Option("open", "--status", help="open, accepted, rejected or closed."),
    count: int = typer.Option(20, "--count", min=1, help="Most items shown."),
) -> None:
    """List review items (possible matches) with their evidence."""
    from rhip.mpi.api import review_page
    from rhip.mpi.service import ready

    store = _store()
    ready(store.engine)
    typer.echo(json.dumps(review_page(store, status, count, 0), ensure_ascii=False, indent=2))


def _done(result: Any) -> None:
    if result is None:
        typer.echo("nothing to change")
    else:
        typer.echo(f"change {result.change_id}; residents {', '.join(result.residents)}")


@mpi_app.command("accept")
def accept_cmd(
    review_id: int = typer.Argument(..., help=REVIEW_HELP),
    actor: str = typer.Option("cli", "--actor", help=ACTOR_HELP),
) -> None:
    """Accept a review item: the record joins the candidate resident."""
    from rhip.mpi.corrections import accept_review

    _done(accept_review(_store(), review_id, actor=actor))


@mpi_app.command("reject")
def reject_cmd(
    review_id: int = typer.Argument(..., help=REVIEW_HELP),
    actor: str = typer.Option("cli", "--actor", help=ACTOR_HELP),
) -> None:
    """Reject a review item."""
    from rhip.mpi.corrections import reject_review

    _done(reject_review(_store(), review_id, actor=actor))


@mpi_app.command("link")
def link_record_cmd(
    record: str = typer.Argument(..., help=RECORD_HELP),
    resident: str = typer.Argument(..., help=RESIDENT_HELP),
    actor: str = typer.Option("cli", "--actor", help=ACTOR_HELP),
) -> None:
    """Link source Patient RECORD to RESIDENT (manual, sticky)."""
    from rhip.mpi.corrections import link_record

    _done(link_record(_store(), _bare(record), _bare(resident), actor=actor))


@mpi_app.command("unlink")
def unlink_cmd(
    record: str = typer.Argument(..., help=RECORD_HELP),
    actor: str = typer.Option("cli", "--actor", help=ACTOR_HELP),
) -> None:
    """Take source Patient RECORD out of its resident."""
    from rhip.mpi.corrections import unlink_record

    _done(unlink_record(_store(), _bare(record), actor=actor))


@mpi_app.command("merge")
def merge_cmd(
    source: str = typer.Argument(..., help="Resident merged away: " + RESIDENT_HELP),
    target: str = typer.Argument(..., help="Resident kept: " + RESIDENT_HELP),
    actor: str = typer.Option("cli", "--actor", help=ACTOR_HELP),
) -> None:
    """Merge resident SOURCE into resident TARGET."""
    from rhip.mpi.corrections import merge_residents

    _done(merge_residents(_store(), _bare(source), _bare(target), actor=actor))


@mpi_app.command("unmerge")
def unmerge_cmd(
    change: int = typer.Argument(..., help=CHANGE_HELP),
    actor: str = typer.Option("cli", "--actor", help=ACTOR_HELP),
) -> None:
    """Undo merge CHANGE."""
    from rhip.mpi.corrections import unmerge

    _done(unmerge(_store(), change, actor=actor))


@mpi_app.command("revert")
def revert_cmd(
    change: int = typer.Argument(..., help=CHANGE_HELP),
    actor: str = typer.Option("cli", "--actor", help=ACTOR_HELP),
) -> None:
    """Undo any correction CHANGE."""
    from rhip.mpi.corrections import revert_change

    _done(revert_change(_store(), change, actor=actor))


@mpi_app.command("evaluate")
def evaluate_cmd(
    truth: Path = typer.Argument(..., help="Generated region folder or patient_links.csv"),
) -> None:
    """Score the current links against the generator's truth (precision, recall, B-cubed)."""
    from rhip.mpi.service import ready

    store = _store()
    ready(store.engine)
    _print_accuracy(store, truth)


def register(app: typer.Typer) -> None:
    """Add ``rhip link`` and ``rhip mpi`` to the command line."""
    app.command("link")(link_cmd)
    app.add_typer(mpi_app, name="mpi")
