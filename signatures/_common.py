"""Helpers shared by the signature families: tolerant parsing of predictions and seeded splits.

A family metric must never raise on what a small LM writes (a missing field, "2e-4 (QLoRA)",
"4-bit", a pydantic error string), so every read goes through these functions: they return
None for anything unusable, and the metric turns None into score 0 with feedback.
"""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path
from typing import Callable, Iterable

from runner.errors import RunnerError
from runner.dspy_ext.metrics import last_number

SPLITS = ("train", "dev", "test")


def result(score: float, feedback: str):
    """The GEPA feedback-metric result: score clipped into [0, 1] plus the feedback text."""
    import dspy

    score = float(score)
    if not math.isfinite(score):
        score = 0.0
    return dspy.Prediction(score=min(1.0, max(0.0, score)), feedback=feedback)


def field(pred, name: str):
    """`pred.name`, or None when pred is None / lacks the field / reading it fails."""
    if pred is None:
        return None
    try:
        value = pred[name] if isinstance(pred, dict) else getattr(pred, name, None)
    except Exception:  # a Prediction with a broken store must not crash the metric
        return None
    if isinstance(value, str) and not value.strip():
        return None
    return value


def number(value) -> float | None:
    """A finite float from a number or the last number written in a string ("lr = 2e-4" -> 2e-4)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        x = last_number(value)
    except Exception:
        return None
    return x if x is not None and math.isfinite(x) else None


def integer(value) -> int | None:
    """A whole number (7.0 -> 7; 7.5 -> None: a fractional rank or batch size is not a choice)."""
    x = number(value)
    if x is None or abs(x - round(x)) > 1e-9 or abs(x) > 1e12:
        return None
    return int(round(x))


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(text).lower()).strip("_")


def choice(value, choices: Iterable[str], aliases: dict[str, str] | None = None) -> str | None:
    """Match `value` to one of `choices` ("DPM-Solver" -> "dpm_solver"); None when unmatched or ambiguous.

    `aliases` maps normalized spellings to a choice ("qlora" -> "4bit"). A longer text is
    accepted when exactly one choice (or alias) occurs in it as a whole token run.
    """
    if value is None:
        return None
    choices = list(choices)
    table = {_norm(c): c for c in choices}
    table.update({_norm(k): v for k, v in (aliases or {}).items()})
    text = _norm(value)
    if text in table:
        return table[text]
    padded = f"_{text}_"
    found = {v for k, v in table.items() if k and f"_{k}_" in padded}
    return found.pop() if len(found) == 1 else None


def seeded_splits(seed: int, sizes: dict[str, int], make_scenario: Callable[[random.Random], dict],
                  to_example: Callable[[dict], object], family: str, max_tries: int = 2000) -> dict[str, list]:
    """Draw unique scenarios from `random.Random(seed)` and cut them into train/dev/test.

    Scenarios are unique by their inputs, so no example appears in two splits. The same seed
    always gives the same splits: the generator draws in a fixed order and labels are computed
    from the scenario alone.
    """
    rng = random.Random(f"{family}:{seed}")
    total = sum(sizes.values())
    seen, scenarios = set(), []
    tries = 0
    while len(scenarios) < total:
        s = make_scenario(rng)
        key = tuple(sorted(s.items()))
        tries = tries + 1 if key in seen else 0
        if tries > max_tries:
            raise RunnerError(f"{family}: only {len(scenarios)} distinct scenarios, {total} requested",
                              "lower task.splits.n_train/n_dev/n_test")
        if key not in seen:
            seen.add(key)
            scenarios.append(s)
    out, start = {}, 0
    for name in SPLITS:
        n = sizes.get(name, 0)
        if n < 0:
            raise RunnerError(f"{family}: n_{name}={n} is negative", "use a size >= 0")
        out[name] = [to_example(s) for s in scenarios[start:start + n]]
        start += n
    return out


def read_jsonl(path: Path, what: str, row: Callable[[dict], dict]) -> list[dict]:
    """The rows of a committed JSONL data file, each mapped through `row` (which raises KeyError /
    ValueError on a bad row); RunnerError naming the file and line otherwise."""
    if not path.is_file():
        raise RunnerError(f"{what} data file missing: {path}", "reinstall dspy-runner from a full checkout")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(row(json.loads(line)))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RunnerError(f"{path}: line {n} is malformed ({exc})", "restore the file from git") from exc
    return rows


def committed_splits(pool: list[dict], test: list[dict], inputs: tuple[str, ...], seed: int,
                     n_train: int, n_dev: int, n_test: int) -> dict[str, list]:
    """Train/dev drawn with `seed` from a public benchmark's train rows; test = its first `n_test`
    test rows, the same for every seed so test scores stay comparable across runs."""
    import dspy

    pool = list(pool)
    random.Random(seed).shuffle(pool)
    if n_train + n_dev > len(pool):
        raise RunnerError(f"n_train + n_dev = {n_train + n_dev} > {len(pool)} committed rows",
                          "lower task.splits.n_train/n_dev")

    def ex(rows):
        return [dspy.Example(**r).with_inputs(*inputs) for r in rows]

    return {"train": ex(pool[:n_train]), "dev": ex(pool[n_train:n_train + n_dev]), "test": ex(test[:n_test])}
