"""Movie-review sentence sentiment: a public benchmark a 135M model can already do somewhat.

The data is a committed subset of the VADER ground truth (signatures/data/sentiment, MIT
licence): Rotten Tomatoes sentences with mean human ratings, labelled by the rating's sign and
kept only when clearly polar. GSM8K is the harder public task; this one gives the embedded model a
measurable uncompiled baseline, so what an optimizer adds can be seen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import dspy

from signatures._common import choice, committed_splits, field, read_jsonl, result

DATA_DIR = Path(__file__).parent / "data" / "sentiment"
LABELS = ("positive", "negative")
ALIASES = {"pos": "positive", "neg": "negative", "good": "positive", "bad": "negative"}


class ClassifySentiment(dspy.Signature):
    """Classify the sentiment of a sentence from a movie review."""

    text: str = dspy.InputField(desc="one sentence from a movie review")
    sentiment: Literal["positive", "negative"] = dspy.OutputField(desc="positive or negative")


def _row(raw: dict) -> dict:
    row = {"text": str(raw["text"]), "sentiment": str(raw["sentiment"]), "rating": float(raw["rating"])}
    if row["sentiment"] not in LABELS:
        raise ValueError(f"sentiment {row['sentiment']!r} is not one of {LABELS}")
    return row


def _read(name: str) -> list[dict]:
    return read_jsonl(DATA_DIR / f"{name}.jsonl", "sentiment", _row)


def load_splits(seed: int = 0, n_train: int = 32, n_dev: int = 32, n_test: int = 100) -> dict[str, list]:
    """Seeded train/dev from the committed train file, test from the first `n_test` test rows."""
    return committed_splits(_read("train"), _read("test"), ("text",), seed, n_train, n_dev, n_test)


def metric(example, pred, trace=None, pred_name=None, pred_trace=None):
    """1.0 for the label the raters' mean gives; the feedback quotes their mean rating."""
    got = choice(field(pred, "sentiment"), LABELS, ALIASES)
    rated = f"human raters gave it {example.rating:+.2f} on a -4..+4 scale"
    if got is None:
        return result(0.0, f"No sentiment label (positive or negative) was given; it is {example.sentiment}: {rated}.")
    if got == example.sentiment:
        return result(1.0, f"Correct: {got} ({rated}).")
    return result(0.0, f"Wrong: answered {got}, but it is {example.sentiment}: {rated}.")
