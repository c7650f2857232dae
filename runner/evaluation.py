"""Scoring a program on a split with dspy.Evaluate, reporting the mean metric in [0,1]."""

from __future__ import annotations

from runner.metrics import score_of
from runner.progress import phase


def evaluate(program, examples, metric, meter, *, title: str, num_threads: int, max_errors: int) -> dict:
    """Mean score over `examples` (failed examples score 0) plus how many failed outright."""
    import dspy

    if not examples:
        return {"score": 0.0, "n": 0, "failed": 0}
    with phase(title, meter, total=len(examples)) as advance:

        def counted(example, pred, trace=None):
            try:
                return score_of(metric(example, pred, trace))
            finally:
                advance()

        counted.__name__ = getattr(metric, "__name__", "metric")
        evaluator = dspy.Evaluate(devset=examples, metric=counted, num_threads=num_threads,
                                  display_progress=False, display_table=False, max_errors=max_errors,
                                  failure_score=0.0, provide_traceback=False)
        result = evaluator(program)
    scores = [float(s) for _, _, s in result.results]
    failed = sum(1 for _, pred, _ in result.results if not pred or len(pred.keys()) == 0)
    return {"score": sum(scores) / len(scores), "n": len(scores), "failed": failed}
