"""The runner's own optimizers, for the options DSPy has no class for (conf/optimizer/).

Every option's YAML wires its metric: GEPA takes the task metric with its feedback, the others
`runner.dspy_ext.metrics.scalar` of it (a float their thresholds compare); `valset: true` hands compile()
the dev split.
"""

from __future__ import annotations


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
