"""GSM8K grade-school math: a public benchmark with an exact, numeric metric.

The data is a committed subset (signatures/data/gsm8k, MIT licence). Gold answers end with
"#### <number>"; the metric compares that number with the predicted `answer` number.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import dspy

from runner.errors import RunnerError
from runner.metrics import last_number

DATA_DIR = Path(__file__).parent / "data" / "gsm8k"


class SolveMathWordProblem(dspy.Signature):
    """Solve the grade-school math word problem and give the final answer as a single number."""

    question: str = dspy.InputField(desc="a math word problem")
    answer: float = dspy.OutputField(desc="the final numeric answer only, no units")


def _read(name: str) -> list[dict]:
    path = DATA_DIR / f"{name}.jsonl"
    if not path.is_file():
        raise RunnerError(f"GSM8K data file missing: {path}", "reinstall dspy-runner from a full checkout")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            gold = row["answer"].split("####")[-1]
            rows.append({"question": row["question"], "answer": last_number(gold),
                         "solution": row["answer"].split("####")[0].strip()})
        except (json.JSONDecodeError, KeyError, AttributeError) as exc:
            raise RunnerError(f"{path}: line {n} is malformed ({exc})", "restore the file from git") from exc
        if rows[-1]["answer"] is None:
            raise RunnerError(f"{path}: line {n} has no numeric answer after ####", "restore the file from git")
    return rows


def load_splits(seed: int = 0, n_train: int = 24, n_dev: int = 24, n_test: int = 50) -> dict[str, list]:
    """Seeded train/dev from GSM8K train, test from GSM8K test."""
    pool = _read("train")
    random.Random(seed).shuffle(pool)
    if n_train + n_dev > len(pool):
        raise RunnerError(f"n_train + n_dev = {n_train + n_dev} > {len(pool)} committed rows", "lower task.splits.n_train/n_dev")
    test = _read("test")[:n_test]

    def ex(rows):
        return [dspy.Example(**r).with_inputs("question") for r in rows]

    return {"train": ex(pool[:n_train]), "dev": ex(pool[n_train:n_train + n_dev]), "test": ex(test)}


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
