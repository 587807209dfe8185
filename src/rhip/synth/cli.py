"""``rhip generate`` (build a synthetic region) and ``rhip replay`` (send its streams to endpoints)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import typer

from rhip.errors import RhipError

replay = typer.Typer(
    help="Replay generated device messages or HL7 v2 messages to a live endpoint.", no_args_is_help=True
)


def generate_cmd(
    out: Path = typer.Option(..., "--out", help="Output folder."),
    residents: int = typer.Option(10_000, "--residents", min=1, help="Number of residents."),
    years: int = typer.Option(3, "--years", min=1, help="Years of history ending at --end-date."),
    seed: int = typer.Option(1, "--seed", help="Same seed and parameters give byte-identical output."),
    formats: str = typer.Option(
        "fhir,hl7v2,csv,dicom,wearable,claims", "--formats", help="Comma-separated writers."
    ),
    end_date: str = typer.Option("2026-06-30", "--end-date", help="Last day of the period (YYYY-MM-DD)."),
    workers: int = typer.Option(2, "--workers", min=1, help="Processes generating resident chunks."),
    params: Path | None = typer.Option(None, "--params", help="YAML file overriding generator parameters."),
) -> None:
    """Generate a synthetic region with ground truth (FHIR, HL7 v2.5, CSV, DICOM, wearable JSON)."""
    from rhip.synth.engine import generate

    try:
        end = date.fromisoformat(end_date)
    except ValueError as exc:
        raise typer.BadParameter(f"--end-date {end_date!r} is not YYYY-MM-DD") from exc
    try:
        manifest = generate(
            out,
            residents=residents,
            years=years,
            seed=seed,
            end_date=end,
            progress=True,
            formats=[f.strip() for f in formats.split(",") if f.strip()],
            workers=workers,
            params_file=params,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(f"wrote {len(manifest.files)} files for {residents} residents to {out}")


@replay.command("mqtt")
def replay_mqtt(
    folder: Path = typer.Argument(..., help="A generated region folder."),
    host: str = typer.Option("127.0.0.1", "--host", help="MQTT broker host."),
    port: int = typer.Option(1883, "--port", help="MQTT broker port."),
    topic: str = typer.Option(
        "rhip/devices/wearable",
        "--topic",
        help="Topic template, may use {device_id}; `rhip mqtt-subscribe` credits a reading to the "
        "facility its last topic level names.",
    ),
    limit: int = typer.Option(0, "--limit", help="Stop after this many messages (0 = all)."),
) -> None:
    """Publish wearable/*.jsonl messages to an MQTT broker (QoS 1)."""
    from rhip.synth.replay import replay_mqtt as run

    with _reaching(f"the MQTT broker at {host}:{port}", "--host/--port, and that the broker runs"):
        sent = run(folder, host=host, port=port, topic=topic, limit=limit or None)
    typer.echo(f"published {sent} messages")


@replay.command("http")
def replay_http(
    folder: Path = typer.Argument(..., help="A generated region folder."),
    url: str = typer.Option(..., "--url", help="Endpoint receiving one JSON message per POST."),
    limit: int = typer.Option(0, "--limit", help="Stop after this many messages (0 = all)."),
    token: str | None = typer.Option(
        None, "--token", help="Bearer token (for RHIP's /ingest/device/FACILITY: a system account's token)."
    ),
) -> None:
    """POST wearable/*.jsonl messages to an HTTP endpoint."""
    import httpx

    from rhip.synth.replay import replay_http as run

    with _reaching(url, "--url, and that `rhip serve` runs there", httpx.TransportError):
        sent = run(folder, url=url, limit=limit or None, token=token)
    typer.echo(f"posted {sent} messages")


@replay.command("mllp")
def replay_mllp(
    folder: Path = typer.Argument(..., help="A generated region folder."),
    host: str = typer.Option("127.0.0.1", "--host", help="MLLP listener host."),
    port: int = typer.Option(2575, "--port", help="MLLP listener port."),
    limit: int = typer.Option(0, "--limit", help="Stop after this many messages (0 = all)."),
) -> None:
    """Send hl7v2/*/messages.hl7 to an MLLP listener, one message at a time, waiting for each ACK."""
    from rhip.synth.replay import replay_mllp as run

    with _reaching(f"the MLLP listener at {host}:{port}", "--host/--port, and that `rhip mllp-listen` runs"):
        sent = run(folder, host=host, port=port, limit=limit or None)
    typer.echo(f"sent {sent} messages")


@contextlib.contextmanager
def _reaching(target: str, check: str, *errors: type[BaseException]) -> Iterator[None]:
    """A peer that cannot be reached (refused, unknown host, timed out) is one message naming it."""
    catch: tuple[type[BaseException], ...] = (OSError, *errors)
    try:
        yield
    except catch as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise RhipError(f"cannot reach {target}: {reason}; check {check}") from None


def register(app: typer.Typer) -> None:
    """Add ``generate`` and ``replay`` to the ``rhip`` app."""
    app.command("generate")(generate_cmd)
    app.add_typer(replay, name="replay")
