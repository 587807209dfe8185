"""Terminal tables that fit 80 columns: the look of every wide count table the CLI prints.

Rich's default box spends three columns per column on borders and padding, so a table of eight
counts overflows an 80-column terminal and rich cuts codes and numbers short ("330402…"). These
tables draw a rule under the header only and share one space between columns.
"""

from __future__ import annotations

from typing import Any


def compact_table(title: str, **options: Any) -> Any:
    """A ``rich.table.Table`` with a header rule only and one space between columns."""
    from rich import box
    from rich.table import Table

    return Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, **options)
