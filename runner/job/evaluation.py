"""Scoring a program on a split with dspy.Evaluate: the mean metric in [0,1], and each example's
inputs, outputs, score and the metric's feedback (with the id of the MLflow trace of its call,
when tracing is on)."""

from __future__ import annotations

import threading

from runner.dspy_ext.metrics import score_of
from runner.job.progress import phase


def _trace_id() -> str | None:
    """The trace the calling thread's last program call left, if MLflow tracing recorded one."""
    try:
        import mlflow

        return mlflow.get_last_active_trace_id(thread_local=True)
    except Exception:  # tracing off, or MLflow absent: per-example rows go without a trace id
        return None


def evaluate(program, examples, metric, meter, *, title: str, num_threads: int, max_errors: int) -> dict:
    """{"score": mean over `examples` (failed examples score 0), "n", "failed": how many gave no
    parseable output, "rows": per example {inputs, outputs, score, feedback, trace_id}}."""
    import dspy

    if not examples:
        return {"score": 0.0, "n": 0, "failed": 0, "rows": []}
    judged: dict[int, tuple[str | None, str | None]] = {}  # id(example) -> (feedback, trace id)
    lock = threading.Lock()
    with phase(title, meter, total=len(examples)) as advance:

        def counted(example, pred, trace=None):
            trace_id = _trace_id()  # before the metric, which may call an LM itself (llm_judge)
            try:
                result = metric(example, pred, trace)
                with lock:
                    judged[id(example)] = (getattr(result, "feedback", None), trace_id)
                return score_of(result)
            finally:
                advance()

        counted.__name__ = getattr(metric, "__name__", "metric")
        evaluator = dspy.Evaluate(devset=examples, metric=counted, num_threads=num_threads,
                                  display_progress=False, display_table=False, max_errors=max_errors,
                                  failure_score=0.0, provide_traceback=False)
        result = evaluator(program)
    rows = []
    for example, pred, score in result.results:
        feedback, trace_id = judged.get(id(example), (None, None))
        outputs = {k: pred[k] for k in pred.keys()} if pred else {}
        rows.append({"inputs": {k: example[k] for k in example.inputs().keys()}, "outputs": outputs,
                     "score": float(score), "feedback": feedback if pred else "no parseable output",
                     "trace_id": trace_id})
    scores = [r["score"] for r in rows]
    failed = sum(1 for _, pred, _ in result.results if not pred or len(pred.keys()) == 0)
    return {"score": sum(scores) / len(scores), "n": len(scores), "failed": failed, "rows": rows}
