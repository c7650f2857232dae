"""Per-example comparison of two evaluations of the same examples, and whether the difference is real.

Rows come from a run's `examples.jsonl` (run dir) or its `examples.json` table (MLflow): one
per evaluated example and phase (baseline / compiled, dev / test), with the inputs, outputs,
score and the metric's feedback. Two evaluations are paired by example (split + inputs).

The difference of the mean scores gets a paired bootstrap confidence interval: resample the
paired examples with replacement, recompute the mean difference, take the percentiles. Its
two-sided p-value is twice the share of resampled differences on the other side of zero from
the observed one (the bootstrap estimate of how often a difference of that sign arises by the
luck of which examples were drawn). Seeded: the same rows always give the same interval.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from runner.errors import RunnerError

EXAMPLES_FILE = "examples.jsonl"
EXAMPLES_TABLE = "examples.json"


@dataclass
class Comparison:
    a_label: str
    b_label: str
    split: str
    pairs: list[tuple[dict, dict]]  # (row of A, row of B) for the same example
    mean_a: float
    mean_b: float
    diff: float
    low: float
    high: float
    p_value: float

    @property
    def flips(self) -> list[tuple[dict, dict]]:
        return [(a, b) for a, b in self.pairs if a["score"] != b["score"]]

    def significant(self, alpha: float = 0.05) -> bool:
        return self.p_value < alpha


def read_rows(run_dir: Path) -> list[dict]:
    path = run_dir / EXAMPLES_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def rows_from_table(table: dict) -> list[dict]:
    """An MLflow `log_table` artifact ({"columns": [...], "data": [[...], ...]}) as row dicts."""
    return [dict(zip(table["columns"], values)) for values in table.get("data", [])]


def key(row: dict) -> tuple:
    inputs = {k: v for k, v in row.items() if k.startswith("input.")}
    return row.get("split"), json.dumps(inputs, sort_keys=True, default=str)


def pick(rows: list[dict], phase: str, split: str) -> dict[tuple, dict]:
    return {key(r): r for r in rows if r.get("phase") == phase and r.get("split") == split}


def bootstrap(diffs: list[float], resamples: int = 5000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """(low, high, two-sided p) of the mean of paired differences."""
    if not diffs:
        return 0.0, 0.0, 1.0
    rng = random.Random(seed)
    n = len(diffs)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    low = means[int((1 - level) / 2 * resamples)]
    high = means[min(resamples - 1, int((1 + level) / 2 * resamples))]
    observed = sum(diffs) / n
    if observed == 0:
        return low, high, 1.0
    other_side = sum(1 for m in means if (m <= 0 if observed > 0 else m >= 0)) / resamples
    return low, high, min(1.0, 2 * other_side)


def compare(a_rows: list[dict], b_rows: list[dict], *, a_phase: str, b_phase: str, split: str,
            a_label: str, b_label: str) -> Comparison:
    """Pair the `a_phase` rows of A with the `b_phase` rows of B on `split`."""
    a, b = pick(a_rows, a_phase, split), pick(b_rows, b_phase, split)
    shared = [k for k in a if k in b]
    if not shared:
        raise RunnerError(f"no example of the {split} split was evaluated in both {a_label} and {b_label}",
                          "compare runs of the same task and splits (same task.splits and seed)")
    pairs = [(a[k], b[k]) for k in shared]
    diffs = [float(y["score"]) - float(x["score"]) for x, y in pairs]
    low, high, p = bootstrap(diffs)
    mean_a = sum(float(x["score"]) for x, _ in pairs) / len(pairs)
    mean_b = sum(float(y["score"]) for _, y in pairs) / len(pairs)
    return Comparison(a_label, b_label, split, pairs, mean_a, mean_b, mean_b - mean_a, low, high, p)


def _outputs(row: dict) -> str:
    return ", ".join(f"{k[7:]}={row[k]}" for k in row if k.startswith("output.")) or "(no output)"


def _inputs(row: dict) -> str:
    return ", ".join(f"{k[6:]}={row[k]}" for k in row if k.startswith("input."))


def _esc(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(c: Comparison, limit: int = 20) -> str:
    verdict = "significant" if c.significant() else "not significant"
    out = [f"### Per example: {c.split} split ({len(c.pairs)} examples)", "",
           f"{c.a_label}: {c.mean_a:.3f} → {c.b_label}: {c.mean_b:.3f}, difference **{c.diff:+.3f}** "
           f"(95% paired bootstrap interval {c.low:+.3f} … {c.high:+.3f}, p = {c.p_value:.3f}: {verdict} at 0.05); "
           f"{len(c.flips)} examples changed score.", ""]
    flips = sorted(c.flips, key=lambda ab: float(ab[1]["score"]) - float(ab[0]["score"]))
    if flips:
        out += ["| inputs | A output | A score | B output | B score | B feedback |", "|---|---|---:|---|---:|---|"]
        for a, b in flips[:limit]:
            out.append(f"| {_esc(_inputs(a))[:120]} | {_esc(_outputs(a))[:80]} | {float(a['score']):.2f} | "
                       f"{_esc(_outputs(b))[:80]} | {float(b['score']):.2f} | {_esc(b.get('feedback') or '')[:160]} |")
        if len(flips) > limit:
            out.append(f"| … {len(flips) - limit} more | | | | | |")
    return "\n".join(out) + "\n"


def html(markdown_text: str, title: str, images: dict[str, bytes] | None = None) -> str:
    """A self-contained HTML page from Markdown (markdown-it, as rich renders it), images inlined."""
    import base64

    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark").enable("table").render(markdown_text)
    for name, data in (images or {}).items():
        body += f'<p><img alt="{name}" src="data:image/png;base64,{base64.b64encode(data).decode()}"></p>\n'
    style = ("body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem}"
             "table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .5rem;"
             "text-align:left}code{background:#f4f4f4;padding:0 .2rem}img{max-width:100%}")
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title><style>{style}</style>"
            f"</head><body>\n{body}</body></html>\n")
