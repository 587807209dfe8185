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


#: Eight block heights, lowest first (U+2581..U+2588).
SPARK_BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float]) -> str:
    """One block character per value, scaled to the largest: the shape of a series in a cell.

    Zero is always the lowest block and any count above zero at least the second, so a single
    case stands out from an empty week.
    """
    top = max(values, default=0.0)
    if top <= 0:
        return SPARK_BLOCKS[0] * len(values)
    steps = len(SPARK_BLOCKS) - 2
    return "".join(SPARK_BLOCKS[0] if v <= 0 else SPARK_BLOCKS[1 + round(steps * v / top)] for v in values)
