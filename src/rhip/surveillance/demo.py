"""The demo's surveillance step: find the generator's injected outbreaks and list the alerts.

Imported by the demo (``rhip.demo``) to register the step after the lake export; it uses the same
functions as ``rhip surveil run`` and ``rhip surveil evaluate``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["register"]


def _surveillance(ctx: Any) -> str:
    from rhip.store import Store
    from rhip.surveillance.cli import print_demo_alerts
    from rhip.synth import DEFAULT_END

    store = Store(ctx.database_url)
    try:
        found = print_demo_alerts(
            ctx.console, store.engine, ctx.settings.lake_dir, ctx.region_dir, end=DEFAULT_END
        )
    finally:
        store.close()
    return f"surveillance: {found} injected outbreaks detected"


def register() -> None:
    """Add the step ``surveillance`` after the lake export (before the accounts step when present)."""
    from rhip.demo.steps import STEPS, DemoStep, register_step

    if not any(s.name == "surveillance" for s in STEPS):
        before = "accounts" if any(s.name == "accounts" for s in STEPS) else None
        step = DemoStep("surveillance", "Detect outbreaks (传染病监测预警)", _surveillance)
        register_step(step, before=before)
