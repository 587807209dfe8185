"""``rhip demo``: run the whole platform on a generated region and serve it."""

from __future__ import annotations

import typer


def demo(
    residents: int = typer.Option(2000, help="Residents in the generated region."),
    years: int = typer.Option(3, help="Years of history to generate."),
    seed: int = typer.Option(1, help="Seed: the same seed gives the same region."),
    serve: bool = typer.Option(True, "--serve/--no-serve", help="Serve the API when the steps are done."),
    skip: list[str] | None = typer.Option(
        None,
        "--skip",
        help="Step to skip (repeat for several): generate, ingest, link, lake, surveillance, accounts.",
    ),
) -> None:
    """Generate a region, ingest, link, export, detect outbreaks, create demo accounts, then serve."""
    from rich.console import Console

    from rhip.config import get_settings
    from rhip.demo.steps import DemoContext, run_demo

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    console = Console()
    ctx = DemoContext(settings=settings, residents=residents, years=years, seed=seed, console=console)
    run_demo(ctx, skip=set(skip or ()))
    base = settings.base_url.rstrip("/")
    console.rule("[bold]RHIP is ready (平台已就绪)")
    console.print(f"FHIR API        {base}/fhir/metadata")
    console.print(f"OpenAPI docs    {base}/docs")
    console.print(f"Data directory  {settings.data_dir.resolve()}")
    console.print(
        "Log in with a demo account above: POST /auth/token, then send the access_token as "
        "'Authorization: Bearer ...'. To look around: rhip quality, rhip quarantine list, "
        "rhip sql 'select gender, count(*) from patient group by 1'.",
        soft_wrap=True,
    )
    console.print(
        "Charts: rhip surveil alerts, then rhip surveil chart ALERT_ID --out alert.html; "
        "rhip quality chart --out quality.html.",
        soft_wrap=True,
    )
    console.print(
        f"Operators: rhip status (the platform at a glance), {base}/ready (readiness probe), "
        "rhip backup create --help (backups with the keys sealed by a passphrase).",
        soft_wrap=True,
    )
    if not serve:
        console.print(
            "Not serving (--no-serve): start the API with `rhip serve` from this folder "
            f"(or with RHIP_DATA_DIR={settings.data_dir.resolve()}).",
            soft_wrap=True,
        )
    if serve:
        from rhip.api.cli import serve as serve_api

        console.print("Serving; press Ctrl-C to stop.")
        serve_api(host=None, port=None, database_url=None, workers=1, log_level="warning")


def register(app: typer.Typer) -> None:
    """Add ``rhip demo``."""
    app.command("demo")(demo)
