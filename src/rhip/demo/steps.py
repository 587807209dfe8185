"""The demo's steps, in order; each one uses the same public functions as the CLI commands."""

from __future__ import annotations

import importlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from rhip.config import Settings
from rhip.errors import RhipError

logger = logging.getLogger(__name__)


@dataclass
class DemoContext:
    """What every step sees: settings, the region folder and what earlier steps produced."""

    settings: Settings
    residents: int
    years: int
    seed: int
    console: Console
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def region_dir(self) -> Path:
        return self.settings.data_dir / "region"

    @property
    def database_url(self) -> str:
        return self.settings.resolved_database_url


@dataclass(frozen=True)
class DemoStep:
    """One named step; ``run`` returns a short summary line."""

    name: str
    title: str
    run: Callable[[DemoContext], str]


STEPS: list[DemoStep] = []


def register_step(step: DemoStep, *, before: str | None = None) -> None:
    """Add a step at the end, or before the named one."""
    if before is None:
        STEPS.append(step)
        return
    index = next(i for i, s in enumerate(STEPS) if s.name == before)
    STEPS.insert(index, step)


def _generate(ctx: DemoContext) -> str:
    from rhip.synth import generate

    manifest_path = ctx.region_dir / "manifest.json"
    wanted = {"residents": ctx.residents, "years": ctx.years, "seed": ctx.seed}
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        params = manifest.get("parameters", manifest)
        if all(params.get(k) == v for k, v in wanted.items()):
            return f"region already generated in {ctx.region_dir}"
    generate(
        ctx.region_dir, residents=ctx.residents, years=ctx.years, seed=ctx.seed, progress=True, workers=2
    )
    return f"{ctx.residents:,} residents over {ctx.years} years written to {ctx.region_dir}"


def _ingest(ctx: DemoContext) -> str:
    from rhip.ingest.cli import run_ingest

    report = run_ingest(
        ctx.region_dir,
        via_mllp=True,
        via_http=True,
        link=True,
        database_url=ctx.database_url,
        console=ctx.console,
        explain_region=False,
    )
    ctx.results["ingest"] = report
    return "ingested: FHIR files, HL7 v2 over MLLP, CSV, DICOM, device JSON over HTTP"


def _link(ctx: DemoContext) -> str:
    from rhip.mpi.cli import _print_accuracy
    from rhip.mpi.relink import relink_all
    from rhip.store import Store

    store = Store(ctx.database_url)
    try:
        with _quiet("splink"):  # its training notes on a small region are not the reader's concern
            report = relink_all(store, retrain=True, backend="duckdb", spark=None, golden=True)
        _print_accuracy(store, ctx.region_dir)
    finally:
        store.close()
    return link_summary(report)


def counted(n: int, singular: str, plural: str | None = None) -> str:
    """``n`` with its noun in the right number: ``1 pair``, ``2 pairs``, ``1,200 pairs``."""
    return f"{n:,} {singular if n == 1 else (plural or singular + 's')}"


def link_summary(report: Any) -> str:
    """The linkage step's line: records, residents and review pairs (a RelinkReport)."""
    phases = ", ".join(f"{name} {sec:.1f} s" for name, sec in report.seconds.items())
    return (
        f"identity linkage: {counted(report.records, 'source record')} -> "
        f"{counted(report.residents, 'resident')} "
        f"({counted(report.review_items, 'pair')} for clerical review{'; ' + phases if phases else ''})"
    )


@contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Warnings of ``logger_name`` and its children held back for the duration (errors still show).

    A filter on the root handlers, not a logger level: the library sets its own level when used.
    """
    hold_back = _BelowError(logger_name)
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(hold_back)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(hold_back)


class _BelowError(logging.Filter):
    """Drops records under ERROR from one logger tree."""

    def __init__(self, logger_name: str) -> None:
        super().__init__()
        self.logger_name = logger_name

    def filter(self, record: logging.LogRecord) -> bool:
        mine = record.name == self.logger_name or record.name.startswith(self.logger_name + ".")
        return record.levelno >= logging.ERROR or not mine


def _lake(ctx: DemoContext) -> str:
    from rich.table import Table

    from rhip.lake.export import export_store
    from rhip.lake.library import example_queries, load_views, materialize, store_views
    from rhip.store import Store

    store = Store(ctx.database_url)
    try:
        report = export_store(store, ctx.settings.lake_dir, full=False)
        views = load_views()
        views.update(store_views(store))
        materialize(ctx.settings.lake_dir, views)
    finally:
        store.close()
    for title, columns, rows in example_queries(ctx.settings.lake_dir):
        table = Table(title=title)
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*("" if v is None else str(v) for v in row))
        ctx.console.print(table)
    return f"lake: {report.total:,} rows exported to {ctx.settings.lake_dir}"


def _accounts(ctx: DemoContext) -> str:
    from rhip.security.cli import users_create_demo

    users_create_demo()
    base = ctx.settings.base_url.rstrip("/")
    ctx.console.print(
        "Get a token, then call the API with it:\n"
        f"  curl -s {base}/auth/token -d grant_type=password -d username=demo-doctor -d password=<secret>\n"
        f"  curl -s -H 'Authorization: Bearer <access_token>' '{base}/fhir/Patient?_count=5'",
        soft_wrap=True,  # a command is copied whole: the terminal may fold it, no line break is added
    )
    return "one demo account per role: resident, doctor, facility admin, public health, insurer, ..."


for _step in (
    DemoStep("generate", "Generate a synthetic region (生成模拟区域)", _generate),
    DemoStep("ingest", "Ingest every facility system (数据采集)", _ingest),
    DemoStep("link", "Link resident identities (多卡合一)", _link),
    DemoStep("lake", "Export the analytics lake (数据湖)", _lake),
    DemoStep("accounts", "Create demo accounts (演示账号)", _accounts),
):
    register_step(_step)


#: Modules whose ``register()`` adds their own demo steps, the way an outside plugin would.
STEP_MODULES: tuple[str, ...] = ("rhip.surveillance.demo",)


def _load_step_modules() -> None:
    for name in STEP_MODULES:
        importlib.import_module(name).register()


#: Steps that read the generated region (its files or its truth), so need it when generation is skipped.
_NEEDS_REGION = frozenset({"ingest", "link", "surveillance"})


def _check_region(ctx: DemoContext, skip: set[str]) -> None:
    """Refuse ``--skip generate`` before any step runs when there is no region to read: ingest
    read the missing folder as a file and said "no connector for '' files"."""
    needed = sorted(_NEEDS_REGION - skip)
    if "generate" in skip and needed and not (ctx.region_dir / "manifest.json").exists():
        raise RhipError(
            f"--skip generate: no generated region in {ctx.region_dir} for the {', '.join(needed)} "
            "step(s); run the demo without --skip generate, from the folder of an earlier demo, or "
            "skip those steps too"
        )


def run_demo(ctx: DemoContext, *, skip: set[str] | None = None) -> dict[str, str]:
    """Run every registered step in order, printing a header and the time each took."""
    _load_step_modules()
    unknown = sorted(set(skip or ()) - {step.name for step in STEPS})
    if unknown:
        raise RhipError(
            f"no demo step named {', '.join(unknown)}; the steps are {', '.join(s.name for s in STEPS)}"
        )
    _check_region(ctx, set(skip or ()))
    summaries: dict[str, str] = {}
    for step in STEPS:
        if skip and step.name in skip:
            continue
        ctx.console.rule(f"[bold]{step.title}")
        started = time.perf_counter()
        summaries[step.name] = step.run(ctx)
        ctx.console.print(f"[green]✓[/green] {summaries[step.name]}  ({time.perf_counter() - started:.1f} s)")
    return summaries
