"""Building and running the configured DSPy optimizer.

Optimizer configs are `_partial_` constructors; the runner supplies the metric, because the
metric is built by another config group. GEPA gets the feedback metric (score + text), every
other optimizer the scalar version, since their thresholds compare numbers.
"""

from __future__ import annotations

import inspect

from runner.metrics import scalar


class Unoptimized:
    """`optimizer=none`: compile returns a copy of the program unchanged."""

    def __init__(self, metric=None):
        self.metric = metric

    def compile(self, student, *, trainset=None, **_):
        return student.deepcopy()


class KNNFewShot:
    """dspy.KNNFewShot with the trainset supplied at compile time like every other optimizer."""

    def __init__(self, metric=None, k: int = 3, embedder=None, **bootstrap_args):
        self.metric = metric
        self.k = k
        self.embedder = embedder
        self.bootstrap_args = bootstrap_args

    def compile(self, student, *, trainset, **_):
        import dspy

        knn = dspy.KNNFewShot(k=self.k, trainset=trainset, vectorizer=dspy.Embedder(self.embedder),
                              metric=self.metric, **self.bootstrap_args)
        return knn.compile(student)


def wants_feedback(factory) -> bool:
    """True for optimizers that read textual feedback from the metric (GEPA)."""
    import dspy

    target = getattr(factory, "func", factory)
    return isinstance(target, type) and issubclass(target, dspy.GEPA)


def build(factory, metric):
    """Call a `_partial_` optimizer constructor with the right flavour of metric
    (LabeledFewShot takes none)."""
    target = getattr(factory, "func", factory)
    if "metric" not in inspect.signature(target).parameters:
        return factory()
    return factory(metric=metric if wants_feedback(factory) else scalar(metric))


def compile_program(optimizer, program, trainset, valset, compile_kwargs: dict):
    """`optimizer.compile` with trainset, plus valset where the optimizer accepts one."""
    params = inspect.signature(optimizer.compile).parameters
    kwargs = dict(compile_kwargs)
    if "valset" in params and valset:
        kwargs.setdefault("valset", valset)
    return optimizer.compile(program, trainset=trainset, **kwargs)
