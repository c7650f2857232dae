"""Rich tables for the console: the phases of a job, and the instructions an optimizer wrote."""

from __future__ import annotations

from rich.table import Table


def summary_table(rows, title: str, caption: str | None = None) -> Table:
    """rows: (phase, score | None, Usage, seconds); each phase's label names its split."""
    table = Table(title=title, caption=caption)
    for col, justify in (("phase", "left"), ("score", "right"), ("LM calls", "right"), ("cached", "right"),
                         ("prompt tok", "right"), ("completion tok", "right"), ("wall s", "right")):
        table.add_column(col, justify=justify)
    for label, score, used, secs in rows:
        table.add_row(label, "" if score is None else f"{score:.3f}", str(used.lm_calls), str(used.cache_hits),
                      str(used.prompt_tokens), str(used.completion_tokens), f"{secs:.1f}")
    return table


def instructions(compiled, original) -> list[tuple[str, str, str]]:
    """(predictor, instruction before, instruction after) for every predictor whose instruction the
    optimizer rewrote (GEPA, MIPROv2, COPRO, SIMBA's rules)."""
    before = {name: p.signature.instructions for name, p in original.named_predictors()}
    return [(name, before.get(name, ""), p.signature.instructions) for name, p in compiled.named_predictors()
            if p.signature.instructions != before.get(name)]


def render_instructions(found: list[tuple[str, str, str]]) -> str:
    """Markdown of the rewritten instructions (logged to MLflow as instructions.md)."""
    parts = []
    for name, old, new in found:
        parts.append(f"## {name}\n\n### before\n\n{old}\n\n### after\n\n{new}\n")
    return "\n".join(parts)


def instructions_table(found: list[tuple[str, str, str]]) -> Table:
    table = Table(title="instructions the optimizer found", show_lines=True)
    for col in ("predictor", "before", "after"):
        table.add_column(col, overflow="fold")
    for name, old, new in found:
        table.add_row(name, old, new)
    return table
