"""``rhip fhir``: validate FHIR JSON/NDJSON files offline and export the shipped terminology.

Operators use ``rhip fhir validate`` on an extract before sending it (same rules as ingest, so a
file that passes here is not quarantined for structure), and ``rhip fhir terminology`` to write
the CodeSystem/ValueSet resources that a store loads.
"""

from __future__ import annotations

from pathlib import Path

import typer

fhir_app = typer.Typer(help="FHIR R4 validation and terminology.", no_args_is_help=True)


def _records(path: Path) -> list[tuple[str, bytes]]:
    """(location, JSON bytes) of each resource in a .json file or each line of a .ndjson file."""
    data = path.read_bytes()
    if path.suffix.lower() in (".ndjson", ".jsonl"):
        return [(f"{path}:{n}", line) for n, line in enumerate(data.splitlines(), 1) if line.strip()]
    return [(str(path), data)]


@fhir_app.command("validate")
def validate_command(
    paths: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help=".json or .ndjson files."),
    warnings: bool = typer.Option(False, "--warnings", help="Also list warnings."),
    bundle_references: bool = typer.Option(
        True, "--bundle-references/--no-bundle-references", help="Check urn:uuid references in Bundles."
    ),
) -> None:
    """Validate resources against FHIR R4; exit code 1 when any has an error."""
    import orjson
    from rich.console import Console
    from rich.progress import track
    from rich.table import Table

    from rhip.fhir.validation import validate_bundle_references, validate_resource

    console = Console()
    table = Table(title="FHIR R4 validation problems")
    for column in ("location", "severity", "code", "expression", "problem"):
        table.add_column(column)
    records = [record for path in paths for record in _records(path)]
    checked = failed = 0
    for location, raw in track(records, description="validating", console=console, transient=True):
        checked += 1
        try:
            resource = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            failed += 1
            table.add_row(location, "error", "structure", "", f"not JSON: {exc.msg} at byte {exc.pos}")
            continue
        issues = validate_resource(resource)
        if bundle_references and isinstance(resource, dict) and resource.get("resourceType") == "Bundle":
            issues += validate_bundle_references(resource)
        if any(issue.severity in ("error", "fatal") for issue in issues):
            failed += 1
        for issue in issues:
            if issue.severity == "warning" and not warnings:
                continue
            table.add_row(
                location, issue.severity, issue.code, ", ".join(issue.expression), issue.diagnostics
            )
    if table.row_count:
        console.print(table)
    console.print(f"{checked} resources checked, {failed} with errors")
    if failed:
        raise typer.Exit(1)


@fhir_app.command("terminology")
def terminology_command(
    out_dir: Path = typer.Argument(..., file_okay=False, help="Directory to write the resources to."),
) -> None:
    """Write the shipped CodeSystems (ICD-10 CN, ICD-9-CM-3 CN, notifiable diseases) and lab ValueSet."""
    import orjson

    from rhip.fhir.terminology import code_system, lab_tests_value_set

    out_dir.mkdir(parents=True, exist_ok=True)
    resources = [code_system(name) for name in ("icd10-cn", "icd9cm3-cn", "notifiable-disease")]
    resources.append(lab_tests_value_set())
    for resource in resources:
        target = out_dir / f"{resource['resourceType']}-{resource['id']}.json"
        target.write_bytes(orjson.dumps(resource, option=orjson.OPT_INDENT_2))
        typer.echo(f"wrote {target}")


def register(app: typer.Typer) -> None:
    """Add the ``fhir`` command group to the platform CLI."""
    app.add_typer(fhir_app, name="fhir")
