"""Rich tables for the console."""

from __future__ import annotations

from rich.table import Table


def summary_table(rows, title: str) -> Table:
    """rows: (phase, score | None, Usage, seconds)."""
    table = Table(title=title)
    for col, justify in (("phase", "left"), ("score", "right"), ("LM calls", "right"), ("cached", "right"),
                         ("prompt tok", "right"), ("completion tok", "right"), ("wall s", "right")):
        table.add_column(col, justify=justify)
    for label, score, used, secs in rows:
        table.add_row(label, "" if score is None else f"{score:.3f}", str(used.lm_calls), str(used.cache_hits),
                      str(used.prompt_tokens), str(used.completion_tokens), f"{secs:.1f}")
    return table
