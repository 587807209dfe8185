"""``rhip ingest``, ``rhip mllp-listen``, ``rhip mqtt-subscribe`` and ``rhip quarantine ...``."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import typer

from rhip.errors import RhipError

quarantine_app = typer.Typer(
    help="Records that could not be stored (隔离区): list, show, replay.\n\n"
    "The usual round: `rhip quarantine list`, `rhip quarantine show ID` for every reason, fix the "
    "CSV mapping, ConceptMap or source, then `rhip quarantine replay`.",
    no_args_is_help=True,
)


def _pipeline(database_url: str | None, link: bool = True) -> Any:
    from rhip.config import get_settings
    from rhip.ingest.hooks import install_default_sinks
    from rhip.ingest.pipeline import Pipeline
    from rhip.quality.collector import QualityCollector
    from rhip.store import Store

    settings = get_settings()
    if not database_url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(database_url or settings.resolved_database_url)
    if link:
        install_default_sinks()  # hand every stored Patient (and A40 merge) to the identity layer
    return Pipeline(store, observers=[QualityCollector(store.engine, settings.timezone)])


def _is_region(path: Path) -> bool:
    return path.is_dir() and any((path / d).is_dir() for d in ("fhir", "hl7v2", "csv", "dicom", "region"))


def ingest_command(
    path: Path = typer.Argument(..., exists=True, help="File, folder, or generated region folder."),
    facility: str | None = typer.Option(
        None,
        "--facility",
        "-f",
        help="Facility code (files and plain folders; default: MSH-4 for HL7, else 'unknown').",
    ),
    connector: str | None = typer.Option(
        None,
        "--connector",
        help="Force a connector: fhir-ndjson, fhir-bundle, hl7v2, csv, dicom or device-json "
        "(default: by extension).",
    ),
    mapping: str | None = typer.Option(
        None,
        "--mapping",
        help="CSV mapping: a shipped name (default: community-centre) or the path of your YAML file.",
    ),
    via_mllp: bool = typer.Option(False, "--via-mllp", help="Send HL7 v2 through a real MLLP listener."),
    via_http: bool = typer.Option(
        False, "--via-http", help="Post device readings to the real HTTP endpoint (region folders)."
    ),
    link: bool = typer.Option(True, "--link/--no-link", help="Hand Patients to the identity layer (MPI)."),
    database_url: str | None = typer.Option(None, "--database-url", help="Store URL (default: settings)."),
) -> None:
    """Ingest files or a generated region; prints reconciliation counts and the quality table.

    Examples: `rhip ingest /data/drop/H001 --facility H001` (every known file of a folder);
    `rhip ingest person.csv --facility C01 --mapping clinic.yaml` (a CSV extract in your own
    layout); `rhip ingest rhip-data/region` (a region written by `rhip generate`). Records that
    cannot be stored are quarantined: `rhip quarantine list`.
    """
    run_ingest(
        path,
        facility=facility,
        connector=connector,
        mapping=mapping,
        via_mllp=via_mllp,
        via_http=via_http,
        link=link,
        database_url=database_url,
    )


def run_ingest(
    path: Path,
    *,
    facility: str | None = None,
    connector: str | None = None,
    mapping: str | None = None,
    via_mllp: bool = False,
    via_http: bool = False,
    link: bool = True,
    database_url: str | None = None,
    console: Any = None,
    explain_region: bool = True,
) -> Any:
    """What ``rhip ingest`` does, callable by ``rhip demo``: ingest, print both tables, return the report.

    ``explain_region`` prints how a generated region's folder is read (and how to read it as plain
    files instead): a hint for an operator at the command line, noise in the demo's own output.
    """
    from rich.console import Console
    from rich.progress import Progress

    from rhip.ingest.conceptmaps import install_conceptmaps
    from rhip.ingest.runner import RegionReport, ingest_file, ingest_region
    from rhip.quality.cli import print_facility_table

    console = console or Console()
    # --facility, --connector and --mapping are for an operator's own files: a drop folder that
    # happens to hold a csv/ or fhir/ subfolder is then read as files, not as a generated region
    region = _is_region(path) and not (facility or connector or mapping)
    files = [] if region else _checked_files(console, path, facility, connector, mapping)
    if not region and (via_mllp or via_http):
        console.print(
            "--via-mllp and --via-http apply to a generated region: these files are read directly "
            "(a facility sends over MLLP to `rhip mllp-listen`, over HTTP to `rhip serve`)",
            markup=False,
        )
    if region and explain_region:
        console.print(
            f"{path}: read as a generated region (fhir/, hl7v2/, csv/, ... subfolders; each file's "
            "facility is its folder's name); give --facility to read it as a folder of your own files",
            markup=False,
        )
    pipeline = _pipeline(database_url, link)
    try:
        install_conceptmaps(pipeline.store)
        report = RegionReport()
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("ingesting", total=None)

            def tick(label: str, rep: Any) -> None:
                progress.update(task, description=label[-60:], advance=1)

            if region:
                report = ingest_region(pipeline, path, via_mllp=via_mllp, via_http=via_http, progress=tick)
            else:
                for file in files:
                    rep = ingest_file(pipeline, file, facility, connector=connector, mapping=mapping)
                    report.add(rep)
                    tick(file.name, rep)
                    if not rep.received:
                        console.print(f"{file}: no records in this file (empty?)", markup=False)
        _print_reconciliation(console, report)
        print_facility_table(console, pipeline.store.engine, facilities=set(report.by_facility))
        if report.total.quarantined:
            console.print(
                f"{report.total.quarantined:,} records quarantined (隔离): `rhip quarantine list` "
                "shows them and their reasons; fix the mapping or the source, then "
                "`rhip quarantine replay`.",
                markup=False,
            )
        return report
    finally:
        pipeline.store.close()


def _checked_files(
    console: Any, path: Path, facility: str | None, connector: str | None, mapping: str | None
) -> list[Path]:
    """The files to ingest, with their connector and CSV mapping checked before anything is written.

    A wrong ``--connector`` or ``--mapping`` stops the run at once (a mistyped ``--mapping`` too
    when no file is CSV: the operator meant one); a CSV file for which the mapping has no table is
    named, since every one of its rows will be quarantined.
    """
    from rhip.ingest.csvmap import CONNECTOR as CSV
    from rhip.ingest.csvmap import load_mapping
    from rhip.ingest.runner import EXTENSIONS, connector_for

    files = _input_files(console, path, connector)
    names = {connector or connector_for(file) for file in files}
    if facility is None and names - {"hl7v2"}:
        console.print(
            "no --facility: records of files other than HL7 (which name their sender in MSH-4) are "
            "credited to facility 'unknown'",
            markup=False,
        )
    unknown = names - set(EXTENSIONS.values())
    if unknown:
        known = ", ".join(sorted(set(EXTENSIONS.values())))
        raise RhipError(f"unknown connector '{unknown.pop()}'; known: {known}")
    if CSV in names or mapping:
        csv_mapping = load_mapping(mapping or "community-centre")
        tables = csv_mapping.spec.get("tables")
        for file in files:
            if (connector or connector_for(file)) == CSV and csv_mapping.table(file.name) is None:
                console.print(
                    f"{file}: mapping '{csv_mapping.name}' has no table '{file.name}' "
                    f"(its tables: {', '.join(map(str, tables or {}))}), so its rows will be "
                    "quarantined; give --mapping a YAML file with a table for it (docs/ingest.md)",
                    markup=False,
                )
    return files


def _input_files(console: Any, path: Path, connector: str | None) -> list[Path]:
    """The files to ingest: ``path`` itself, or every file of a folder that has a connector.

    A folder's files without a connector (a README, a ``.txt`` export) are named and skipped, so
    one stray file does not stop the run half-way; a folder with nothing to ingest is said so.
    A single file given by name keeps its error (no connector for its extension).
    """
    from rhip.ingest.runner import connector_for

    if not path.is_dir():
        return [path]
    files: list[Path] = []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        try:
            connector or connector_for(file)
        except RhipError:
            console.print(f"skipped {file}: no connector for '{file.suffix}' files", markup=False)
            continue
        files.append(file)
    if not files:
        console.print(f"nothing to ingest in {path}: no file with a known extension", markup=False)
    return files


#: The reconciliation table's count columns: (header, report attribute).
_COUNT_COLUMNS = (
    ("received\n接收", "received"),
    ("stored\n入库", "stored"),
    ("quarantined\n隔离", "quarantined"),
    ("duplicates\n重复", "duplicates"),
    ("stale\n过期", "stale"),
    ("resources\n资源", "resources_written"),
)


def _print_reconciliation(console: Any, report: Any) -> None:
    """Counts per connector, per facility and in total; fits 80 columns without cutting a code."""
    from rhip.tables import compact_table

    table = compact_table(
        "Ingest reconciliation 对账\nreceived = stored + quarantined + duplicates + stale",
        caption="Counts are records (an NDJSON line, an HL7 message, a CSV row, a file, a reading); "
        "resources are the FHIR resources written from them. stale: older than what is stored.",
    )
    table.add_column("source\n来源", overflow="fold", min_width=11)
    for header, _attr in _COUNT_COLUMNS:
        table.add_column(header, justify="right", no_wrap=True)
    table.add_column("ok\n平衡", justify="right", no_wrap=True)
    groups = (("connector 接入", report.by_connector), ("facility 机构", report.by_facility))
    for title, reports in groups:
        table.add_row(f"[bold]{title}[/bold]")
        for name, counts in sorted(reports.items()):
            table.add_row(name, *_counts(counts))
        table.add_section()
    table.add_row("[bold]total 合计[/bold]", *_counts(report.total))
    console.print(table)


def _counts(report: Any) -> list[str]:
    cells = [f"{getattr(report, attr):,}" for _header, attr in _COUNT_COLUMNS]
    return [*cells, "yes" if report.reconciled else "[bold red]NO[/bold red]"]


def mllp_listen(
    host: str = typer.Option("127.0.0.1", help="Address to bind."),
    port: int | None = typer.Option(None, help="TCP port (default: setting RHIP_MLLP_PORT, 2575)."),
    facility: str | None = typer.Option(None, help="Facility code (default: MSH-4 of each message)."),
    database_url: str | None = typer.Option(None, "--database-url", help="Store URL (default: settings)."),
    link: bool = typer.Option(True, "--link/--no-link", help="Hand Patients to the identity layer (MPI)."),
) -> None:
    """Run the HL7 v2 MLLP listener until Ctrl-C or SIGTERM (ACK AA/AE/AR with ERR segments).

    A stop finishes the batch being written and sends its ACKs (messages not yet written get no
    ACK: their senders resend them), then prints the counts and exits 0.
    """
    import asyncio
    import os
    import signal

    from rhip.ingest import hl7v2_map  # noqa: F401 (registers the mapper)
    from rhip.ingest.mllp import MLLPListener, run

    listener = MLLPListener(_pipeline(database_url, link), host, port, facility=facility)

    async def serve() -> None:
        try:
            await listener.start()
        except OSError as exc:  # port taken, address not on this host, port below 1024 without root
            await listener.stop()
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise RhipError(
                f"cannot listen on {host}:{listener.port}: {reason}; choose another --port "
                "(or RHIP_MLLP_PORT) or --host, or stop what is using that port"
            ) from None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C stays KeyboardInterrupt
                loop.add_signal_handler(sig, stop.set)
        typer.echo(f"MLLP listener on {host}:{listener.port} (Ctrl-C or SIGTERM to stop)")
        try:
            await stop.wait()
        finally:
            await listener.stop()

    with contextlib.suppress(KeyboardInterrupt):
        run(serve())
    typer.echo(_mllp_counts(listener))


def _mllp_counts(listener: Any) -> str:
    """The listener's counts since it started: messages answered, by outcome and by ACK code."""
    totals = dict.fromkeys(("stored", "quarantined", "duplicates", "stale"), 0)
    for report in listener.reports.values():
        for name in totals:
            totals[name] += getattr(report, name)
    acks = " ".join(f"{code} {n}" for code, n in listener.stats.acks.items())
    counts = " ".join(f"{name} {n}" for name, n in totals.items())
    return f"received {listener.stats.received} {counts} (ACKs: {acks})"


@contextlib.contextmanager
def _stop_on_signals(stop: Any) -> Any:
    """While in the block, SIGTERM (a service manager's stop) and Ctrl-C call ``stop()``; a second
    Ctrl-C interrupts at once. The previous handlers are put back after."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():  # only the main thread may
        yield
        return
    stopping = threading.Event()

    def handle(signum: int, _frame: Any) -> None:
        if stopping.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stopping.set()
        stop()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def mqtt_subscribe(
    broker: str = typer.Option(
        "mqtt://127.0.0.1:1883",
        help="Broker URL: mqtt://host:1883, or mqtts://host:8883 for TLS; a user and password may "
        "be given as mqtt://user:password@host (better: RHIP_MQTT_USERNAME, RHIP_MQTT_PASSWORD).",
    ),
    topic: str = typer.Option("rhip/devices/#", help="Topic filter; last level = facility."),
    facility: str | None = typer.Option(None, help="Facility code for every message."),
    client_id: str | None = typer.Option(
        None,
        "--client-id",
        help="MQTT client id, under which the broker keeps the subscription and queued readings "
        "while the subscriber is down; two subscribers must not share one (default: "
        "rhip-<host name>-<hash of the topic>).",
    ),
    ca_file: Path | None = typer.Option(
        None,
        "--ca-file",
        exists=True,
        dir_okay=False,
        help="PEM certificate of the CA that signed an mqtts:// broker's (default: the system's CAs).",
    ),
    max_messages: int | None = typer.Option(None, help="Stop after this many messages."),
    database_url: str | None = typer.Option(None, "--database-url", help="Store URL (default: settings)."),
) -> None:
    """Subscribe to device readings on an MQTT broker and ingest them until Ctrl-C or SIGTERM.

    A message is acknowledged to the broker only after its readings are committed, and the broker
    keeps the session (see --client-id): readings published while the subscriber is stopped, or
    received and not yet committed when it dies, are delivered at its next start. A stop commits
    the batch in hand, acknowledges it, prints the counts and exits 0.
    """
    import threading

    from rhip.ingest.device import MqttSubscriber

    stop = threading.Event()
    sub = MqttSubscriber(
        _pipeline(database_url), broker, topic, facility=facility, client_id=client_id, ca_file=ca_file
    )

    def ready() -> None:
        session = "its session resumed" if sub.session_present else "a new session"
        typer.echo(
            f"subscribed to {topic} on {sub.broker} as client id {sub.client_id}, {session} "
            "(Ctrl-C or SIGTERM to stop)"
        )

    with _stop_on_signals(stop.set):
        rep = sub.run(stop, max_messages=max_messages, ready=ready)
    typer.echo(
        f"received {rep.received} stored {rep.stored} "
        f"quarantined {rep.quarantined} duplicates {rep.duplicates} stale {rep.stale}"
    )


def _check_status(value: str) -> str:
    from rhip.ingest.quarantine import STATUS_FILTERS

    if value not in STATUS_FILTERS:
        raise typer.BadParameter(f"'{value}' is not one of {', '.join(STATUS_FILTERS)}")
    return value


def _entry(engine: Any, entry_id: int) -> Any:
    """One quarantine entry; an unknown id names the command that lists the ids."""
    from rhip.ingest.quarantine import get_entry

    try:
        return get_entry(engine, entry_id)
    except RhipError:
        raise RhipError(
            f"no quarantine entry {entry_id}; `rhip quarantine list --status all` lists the ids"
        ) from None


@quarantine_app.command("list")
def quarantine_list(
    facility: str | None = typer.Option(None, help="Only this facility."),
    connector: str | None = typer.Option(None, help="Only this connector."),
    status: str = typer.Option("open", help="open | replayed | all", callback=_check_status),
    limit: int = typer.Option(50, help="Most entries shown."),
    database_url: str | None = typer.Option(None, "--database-url", help="Store URL (default: settings)."),
) -> None:
    """List quarantined records with their first reason."""
    from rich.console import Console

    from rhip.ingest.quarantine import list_entries
    from rhip.tables import compact_table

    pipeline = _pipeline(database_url, link=False)
    entries = list_entries(
        pipeline.engine,
        status=None if status == "all" else status,
        facility=facility,
        connector=connector,
        limit=limit,
    )
    table = compact_table(
        f"Quarantine 隔离区 ({len(entries)} shown; `rhip quarantine show ID` for every reason)"
    )
    for col in ("id", "facility\n机构", "connector\n接入", "position\n位置", "rule\n规则", "path\n路径"):
        table.add_column(col, overflow="fold")  # a file:line or element path is wrapped, never cut
    table.add_column("status\n状态")
    for e in entries:
        first = e.reasons[0] if e.reasons else {}
        table.add_row(
            str(e.q_id),
            e.facility,
            e.connector,
            e.position,
            first.get("rule", ""),
            first.get("path", ""),
            e.status,
        )
    Console().print(table)


@quarantine_app.command("show")
def quarantine_show(
    entry_id: int = typer.Argument(..., help="Quarantine entry id."),
    raw: bool = typer.Option(
        False,
        "--raw",
        help="Also print the record as text, read in its declared or detected encoding, which is named "
        "(may hold personal data).",
    ),
    raw_bytes: bool = typer.Option(
        False, "--bytes", help="Write only the record's verbatim bytes, unchanged (to redirect to a file)."
    ),
    database_url: str | None = typer.Option(None, "--database-url", help="Store URL (default: settings)."),
) -> None:
    """Show one entry: source, position and every reason (rule, element path, message)."""
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    import orjson

    from rhip.config import get_settings

    entry = _entry(_pipeline(database_url, link=False).engine, entry_id)
    if raw_bytes:
        import sys

        sys.stdout.flush()
        sys.stdout.buffer.write(entry.raw)
        sys.stdout.buffer.flush()
        return
    summary = entry.summary()
    zone = ZoneInfo(get_settings().timezone)  # a local time the operator reads, not epoch seconds
    created = datetime.fromtimestamp(entry.created, UTC).astimezone(zone)
    summary["created"] = created.isoformat(timespec="seconds")
    typer.echo(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    if raw:
        from rhip.ingest.quarantine import raw_text

        text, encoding = raw_text(entry)
        typer.echo(f"raw record ({encoding}):")
        typer.echo(text)


@quarantine_app.command("replay")
def quarantine_replay(
    entry_ids: list[int] = typer.Argument(
        None, help="Entry ids (default: every open entry matching filters)."
    ),
    facility: str | None = typer.Option(None, help="Only this facility."),
    connector: str | None = typer.Option(None, help="Only this connector."),
    database_url: str | None = typer.Option(None, "--database-url", help="Store URL (default: settings)."),
) -> None:
    """Run entries through the pipeline again (after fixing a mapping or ConceptMap)."""
    from rhip.ingest import runner  # noqa: F401 (registers every mapper)
    from rhip.ingest.quarantine import list_entries, replay

    pipeline = _pipeline(database_url)
    if entry_ids:
        entries = [_entry(pipeline.engine, i) for i in entry_ids]
    else:
        entries = list_entries(pipeline.engine, facility=facility, connector=connector, limit=1_000_000)
        if not entries:
            typer.echo("nothing to replay: no open quarantine entry matches")
            return
    rep = replay(pipeline, entries)
    typer.echo(
        f"replayed {rep.received}: stored {rep.stored}, still quarantined {rep.quarantined}, "
        f"duplicates {rep.duplicates}"
    )


def register(app: typer.Typer) -> None:
    """Add the ingest commands to the ``rhip`` app."""
    app.command("ingest")(ingest_command)
    app.command("mllp-listen")(mllp_listen)
    app.command("mqtt-subscribe")(mqtt_subscribe)
    app.add_typer(quarantine_app, name="quarantine")
