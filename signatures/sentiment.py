"""Movie-review sentence sentiment: a public benchmark a 135M model can already do somewhat.

The data is a committed subset of the VADER ground truth (signatures/data/sentiment, MIT
licence): Rotten Tomatoes sentences with mean human ratings, labelled by the rating's sign and
kept only when clearly polar. GSM8K is the harder public task; this one gives the embedded model a
measurable uncompiled baseline, so what an optimizer adds can be seen.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Literal

import dspy

from runner.errors import RunnerError
from signatures._common import choice, field, result

DATA_DIR = Path(__file__).parent / "data" / "sentiment"
LABELS = ("positive", "negative")
ALIASES = {"pos": "positive", "neg": "negative", "good": "positive", "bad": "negative"}


class ClassifySentiment(dspy.Signature):
    """Classify the sentiment of a sentence from a movie review."""

    text: str = dspy.InputField(desc="one sentence from a movie review")
    sentiment: Literal["positive", "negative"] = dspy.OutputField(desc="positive or negative")


def _read(name: str) -> list[dict]:
    path = DATA_DIR / f"{name}.jsonl"
    if not path.is_file():
        raise RunnerError(f"sentiment data file missing: {path}", "reinstall dspy-runner from a full checkout")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append({"text": str(row["text"]), "sentiment": str(row["sentiment"]), "rating": float(row["rating"])})
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise RunnerError(f"{path}: line {n} is malformed ({exc})", "restore the file from git") from exc
        if rows[-1]["sentiment"] not in LABELS:
            raise RunnerError(f"{path}: line {n} has sentiment {rows[-1]['sentiment']!r}", f"use one of {LABELS}")
    return rows


def load_splits(seed: int = 0, n_train: int = 32, n_dev: int = 32, n_test: int = 100) -> dict[str, list]:
    """Seeded train/dev from the committed train file, test from the first `n_test` test rows."""
    pool = _read("train")
    random.Random(seed).shuffle(pool)
    if n_train + n_dev > len(pool):
        raise RunnerError(f"n_train + n_dev = {n_train + n_dev} > {len(pool)} committed rows",
                          "lower task.splits.n_train/n_dev")
    test = _read("test")[:n_test]

    def ex(rows):
        return [dspy.Example(**r).with_inputs("text") for r in rows]

    return {"train": ex(pool[:n_train]), "dev": ex(pool[n_train:n_train + n_dev]), "test": ex(test)}


def metric(example, pred, trace=None, pred_name=None, pred_trace=None):
    """1.0 for the label the raters' mean gives; the feedback quotes their mean rating."""
    got = choice(field(pred, "sentiment"), LABELS, ALIASES)
    rated = f"human raters gave it {example.rating:+.2f} on a -4..+4 scale"
    if got is None:
        return result(0.0, f"No sentiment label (positive or negative) was given; it is {example.sentiment}: {rated}.")
    if got == example.sentiment:
        return result(1.0, f"Correct: {got} ({rated}).")
    return result(0.0, f"Wrong: answered {got}, but it is {example.sentiment}: {rated}.")
