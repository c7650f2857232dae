"""GSM8K grade-school math: a public benchmark with an exact, numeric metric.

The data is a committed subset (signatures/data/gsm8k, MIT licence). Gold answers end with
"#### <number>"; the metric compares that number with the predicted `answer` number.
"""

from __future__ import annotations

from pathlib import Path

import dspy

from runner.dspy_ext.metrics import last_number
from signatures._common import committed_splits, read_jsonl

DATA_DIR = Path(__file__).parent / "data" / "gsm8k"


class SolveMathWordProblem(dspy.Signature):
    """Solve the grade-school math word problem and give the final answer as a single number."""

    question: str = dspy.InputField(desc="a math word problem")
    answer: float = dspy.OutputField(desc="the final numeric answer only, no units")


def _row(raw: dict) -> dict:
    number = last_number(raw["answer"].split("####")[-1])
    if number is None:
        raise ValueError("no numeric answer after ####")
    return {"question": raw["question"], "answer": number, "solution": raw["answer"].split("####")[0].strip()}


def _read(name: str) -> list[dict]:
    return read_jsonl(DATA_DIR / f"{name}.jsonl", "GSM8K", _row)


def load_splits(seed: int = 0, n_train: int = 24, n_dev: int = 24, n_test: int = 50) -> dict[str, list]:
    """Seeded train/dev from GSM8K train, test from GSM8K test."""
    return committed_splits(_read("train"), _read("test"), ("question",), seed, n_train, n_dev, n_test)


def metric(example, pred, trace=None, pred_name=None, pred_trace=None):
    """1.0 when the predicted number equals the gold number; feedback shows the worked solution."""
    gold = float(example.answer)
    got = last_number(getattr(pred, "answer", None)) if pred is not None else None
    if got is None:
        return dspy.Prediction(score=0.0, feedback=f"No numeric answer was given. The answer is {gold:g}. "
                                                    f"Worked solution: {example.get('solution', '')}")
    if abs(got - gold) <= 1e-6 * max(1.0, abs(gold)):
        return dspy.Prediction(score=1.0, feedback=f"Correct: {gold:g}.")
    return dspy.Prediction(score=0.0, feedback=f"Wrong: answered {got:g}, the answer is {gold:g}. "
                                                f"Worked solution: {example.get('solution', '')}")
