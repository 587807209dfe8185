"""``rhip status``: the state of the platform for an operator, as tables or as JSON for monitoring."""

from __future__ import annotations

import json
from typing import Any

import typer

#: Columns of the per-facility batch table: (label, key, right-aligned).
_BATCH_COLUMNS = (
    ("facility\n机构", "facility", False),
    ("connector\n接入方式", "connector", False),
    ("finished (UTC)\n完成时间", "finished", False),
    ("received\n接收", "received", True),
    ("stored\n入库", "stored", True),
    ("quarantined\n隔离", "quarantined", True),
    ("duplicates\n重复", "duplicates", True),
)


def status_command(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (for monitoring scripts)."),
    top: int = typer.Option(10, min=1, help="How many resource types to list, most numerous first."),
    database_url: str | None = typer.Option(
        None,
        "--database-url",
        help="Store URL (default: RHIP_DATABASE_URL or the SQLite file in the data dir).",
    ),
) -> None:
    """Show the platform's state: store, ingest, quarantine, MPI, lake, surveillance, audit, keys.

    Reads only: a data directory without a store, or a store at an older schema, is reported,
    never created or migrated.
    """
    from rhip.config import get_settings
    from rhip.status import collect_status

    settings = get_settings()
    if database_url:
        settings = settings.model_copy(update={"database_url": database_url})
    status = collect_status(settings, top=top)
    if as_json:
        typer.echo(json.dumps(status, ensure_ascii=False, indent=2))
        return
    from rich.console import Console

    console = Console()
    console.print(overview_table(status))
    resources = status["store"].get("resources")
    if resources:
        console.print(resources_table(resources, status["store"]["resource_types"]))
    batches = status["ingest"].get("last_batches")
    if batches:
        console.print(batches_table(batches))


def _count(value: int) -> str:
    return f"{value:,}"


def _noted(section: dict[str, Any], rows: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The rows of a section, or its one note (nothing to count yet, or not read)."""
    return [("", section["note"])] if "note" in section else rows


def _store_rows(store: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [("back end 后端", store["backend"])]
    if "revision" in store:
        head = "at head" if store["at_head"] else store["advice"]
        rows.append(("schema 架构版本", f"{store['revision'] or 'none'} ({head})"))
    if "resources_total" in store:
        total, types = store["resources_total"], store["resource_types"]
        rows.append(("resources 资源", f"{_count(total)} in {types} types" if total else "none yet"))
    return rows if "note" not in store else [*rows, ("", store["note"])]


def _ingest_rows(ingest: dict[str, Any]) -> list[tuple[str, str]]:
    waiting = ingest.get("quarantine_open_by_facility", {})
    detail = ", ".join(f"{facility} {_count(n)}" for facility, n in waiting.items())
    facilities = len(ingest.get("last_batches", []))
    return _noted(
        ingest,
        [
            ("facilities sending 接入机构", _count(facilities) if facilities else "none yet"),
            (
                "quarantine awaiting replay 隔离待重放",
                _count(ingest.get("quarantine_open", 0)) + (f" ({detail})" if detail else ""),
            ),
        ],
    )


def _mpi_rows(mpi: dict[str, Any]) -> list[tuple[str, str]]:
    return _noted(
        mpi,
        [
            ("residents 居民", _count(mpi.get("residents", 0))),
            ("source records 来源记录", _count(mpi.get("source_records", 0))),
            ("review queue 待人工审核", _count(mpi.get("review_open", 0))),
        ],
    )


def _lake_rows(lake: dict[str, Any]) -> list[tuple[str, str]]:
    if "note" in lake:
        return [("last export 最近导出", lake["note"])]
    changed = "yes: rhip export is due" if lake["store_changed_since"] else "no"
    return [("last export 最近导出", lake["last_export"]), ("store changed since 之后有变更", changed)]


def _surveillance_rows(surveillance: dict[str, Any]) -> list[tuple[str, str]]:
    return _noted(
        surveillance,
        [
            ("open alerts 未处理预警", _count(surveillance.get("open_alerts", 0))),
            ("acknowledged 已确认", _count(surveillance.get("acknowledged_alerts", 0))),
        ],
    )


def _audit_rows(audit: dict[str, Any]) -> list[tuple[str, str]]:
    if "note" in audit:
        return [("", audit["note"])]
    verified = audit["last_verified"] or "never"
    return [
        ("events 事件", _count(audit["events"])),
        ("chain head 链头 (SM3)", audit["head_hash"]),
        ("last verified 最近校验", verified),
        (
            "verify 校验",
            ("needed 需要: " if audit["verify_needed"] else "not needed 无需: ") + audit["advice"],
        ),
    ]


def _key_rows(keys: list[dict[str, Any]]) -> list[tuple[str, str]]:
    def versions(key: dict[str, Any]) -> str:
        if not key["versions"]:
            return "none yet (made on first use)"
        listed = ", ".join(f"v{v}" for v in key["versions"])
        return f"v{key['current']} in use (on disk: {listed})"

    return [(f"{key['kind']} 版本", versions(key)) for key in keys]


#: The overview's areas: (label, section name, rows of that section).
_AREAS = (
    ("store 存储", "store", _store_rows),
    ("ingest 接入", "ingest", _ingest_rows),
    ("MPI 主索引", "mpi", _mpi_rows),
    ("lake 数据湖", "lake", _lake_rows),
    ("surveillance 监测", "surveillance", _surveillance_rows),
    ("audit 审计", "audit", _audit_rows),
    ("keys 密钥", "keys", _key_rows),
)


def overview_table(status: dict[str, Any]) -> Any:
    """One row per figure, grouped by area (a section with nothing yet says so)."""
    from rhip.tables import compact_table

    table = compact_table("Platform status (平台状态)")
    table.add_column("area\n领域", no_wrap=True)
    table.add_column("item\n项目", no_wrap=True)
    table.add_column("value\n值")
    for label, name, rows in _AREAS:
        for index, (item, value) in enumerate(rows(status[name])):
            table.add_row(label if index == 0 else "", item, value, end_section=False)
        table.add_section()
    return table


def resources_table(resources: list[dict[str, Any]], types: int) -> Any:
    """Current resources of the most numerous types."""
    from rhip.tables import compact_table

    shown = (
        f"the {len(resources)} most numerous of {types} types"
        if len(resources) < types
        else f"all {types} types"
    )
    table = compact_table("Resources per type (各类资源数量)", caption=shown, min_width=40)
    table.add_column("type\n资源类型")
    table.add_column("resources\n数量", justify="right")
    for row in resources:
        table.add_row(row["type"], _count(row["count"]))
    return table


def batches_table(batches: list[dict[str, Any]]) -> Any:
    """The last ingest batch of every facility with its reconciliation counts."""
    from rhip.tables import compact_table

    table = compact_table("Last ingest batch per facility (各机构最近一批)")
    for label, _, numeric in _BATCH_COLUMNS:
        table.add_column(label, justify="right" if numeric else "left", no_wrap=True)
    for row in batches:
        cells = [row[key] for _, key, _ in _BATCH_COLUMNS]
        table.add_row(*(_count(c) if isinstance(c, int) else str(c or "running") for c in cells))
    return table


def register(app: typer.Typer) -> None:
    """Add ``rhip status`` to the command line."""
    app.command("status")(status_command)
