"""Generic metrics for declarative tasks, and the adapters every optimizer path uses.

Every metric here returns `dspy.Prediction(score=float in [0,1], feedback=str)`: GEPA reads the
feedback, and `scalar()` turns the same metric into the plain float that Evaluate,
BootstrapFewShot & co. compare against thresholds.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import re
import string
from collections import Counter

from runner.errors import RunnerError

_NUMBER = re.compile(r"-?\d[\d,]*\.?\d*(?:[eE][-+]?\d+)?")


def normalize(text) -> str:
    """Lower-case, strip punctuation and articles, collapse whitespace (SQuAD normalisation)."""
    text = str(text).lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def last_number(text) -> float | None:
    """The last number written in `text` ("#### 1,234" -> 1234.0), or None."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    found = _NUMBER.findall(str(text))
    for tok in reversed(found):
        try:
            return float(tok.replace(",", "").rstrip("."))
        except ValueError:
            continue
    return None


def _result(score: float, feedback: str):
    import dspy

    return dspy.Prediction(score=float(score), feedback=feedback)


class _FieldMetric:
    """Compares one output field of the gold example and the prediction."""

    def __init__(self, field: str | None = None):
        self.field = field

    def __call__(self, example, pred, trace=None, pred_name=None, pred_trace=None):
        field = self.field or list(example.labels().keys())[-1]
        gold = example.get(field)
        got = getattr(pred, field, None) if pred is not None else None
        if got is None:
            return _result(0.0, f"no `{field}` in the output; expected {gold!r}")
        return self.score(gold, got)

    @property
    def __name__(self) -> str:  # Evaluate and MLflow name metrics by __name__
        return type(self).__name__


class ExactMatch(_FieldMetric):
    def score(self, gold, got):
        ok = normalize(gold) == normalize(got)
        return _result(ok, "correct" if ok else f"expected {gold!r}, got {got!r}")


class Accuracy(_FieldMetric):
    def score(self, gold, got):
        ok = str(gold).strip().lower() == str(got).strip().lower()
        return _result(ok, "correct label" if ok else f"wrong label: expected {gold!r}, got {got!r}")


class TokenF1(_FieldMetric):
    def score(self, gold, got):
        g, p = normalize(gold).split(), normalize(got).split()
        common = sum((Counter(g) & Counter(p)).values())
        if not g or not p or common == 0:
            return _result(0.0, f"no word overlap with the expected answer {gold!r}")
        prec, rec = common / len(p), common / len(g)
        f1 = 2 * prec * rec / (prec + rec)
        missing = [w for w in g if w not in p][:8]
        return _result(f1, f"F1={f1:.2f}" + (f"; missing words: {' '.join(missing)}" if missing else ""))


class Numeric(_FieldMetric):
    def __init__(self, field: str | None = None, rel_tol: float = 1e-6):
        super().__init__(field)
        self.rel_tol = rel_tol

    def score(self, gold, got):
        g, p = last_number(gold), last_number(got)
        if g is None:
            raise RunnerError(f"gold answer {gold!r} has no number", "metric=numeric needs numeric gold answers")
        if p is None:
            return _result(0.0, f"the answer contains no number; expected {g:g}")
        ok = math.isclose(g, p, rel_tol=self.rel_tol, abs_tol=self.rel_tol)
        return _result(ok, "correct" if ok else f"expected {g:g}, got {p:g}")


class LLMJudge(_FieldMetric):
    """An LM (the model group's, by default) judges equivalence with the gold answer."""

    def __init__(self, field: str | None = None, judge_lm=None):
        super().__init__(field)
        self.judge_lm = judge_lm

    def score(self, gold, got):
        import dspy

        judge = dspy.Predict("gold_answer, predicted_answer -> equivalent: bool, reason: str")
        with dspy.context(lm=self.judge_lm) if self.judge_lm is not None else contextlib.nullcontext():
            verdict = judge(gold_answer=str(gold), predicted_answer=str(got))
        return _result(bool(verdict.equivalent), str(verdict.reason))


def task_metric(path: str, field: str | None = None):
    """Resolve `task.metric`: a function (used as is) or a metric class (built with `field`)."""
    module_name, _, attr = str(path).rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise RunnerError(f"cannot import metric {path!r}: {exc}", "check task.metric") from exc
    return obj(field=field) if isinstance(obj, type) else obj


def score_of(result) -> float:
    """A metric result (bool, number or Prediction with .score) as a float."""
    if result is None:
        return 0.0
    if hasattr(result, "score"):
        return float(result.score)
    return float(result)


def scalar(metric):
    """Wrap a feedback metric so it returns a float (for thresholds and averaging)."""

    def scored(example, pred, trace=None, *args, **kwargs):
        return score_of(metric(example, pred, trace))

    scored.__name__ = getattr(metric, "__name__", type(metric).__name__)
    return scored
