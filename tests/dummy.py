"""A DummyLM that answers every prompt, for fast tests of every optimizer path.

DummyLM matches dict keys as substrings of the last message; the empty key matches all.
The answer carries every output field the runner's task and DSPy's optimizers ask for
(ChatAdapter ignores the extra ones).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import dspy
from dspy.utils import DummyLM

FIELDS = {
    "reasoning": "Add the numbers.",
    "answer": "42",
    "proposed_instruction": "Solve the problem step by step and give only the final number.",
    "proposed_prefix_for_output_field": "Answer:",
    "observations": "Math word problems.",
    "summary": "Math word problems with numeric answers.",
    "program_description": "Answers math questions.",
    "module_description": "Predicts a number.",
    "dataset_description": "Grade-school math.",
    "discussion": "The answer was wrong.",
    "module_advice": '{"self": "Compute carefully.", "predict": "Compute carefully."}',
    "new_instruction": "```\nSolve the problem and answer with one number.\n```",
    "equivalent": "True",
}


def scripted_lm(answer: str = "42", api_key: str | None = None, extra_headers: dict | None = None,
                **_ignored) -> dspy.LM:
    """`_target_` for tests/conf/model/scripted.yaml; extra model keys are ignored. An api_key and
    extra_headers are kept in the LM's kwargs, where dspy.LM keeps them, so secret-handling tests
    see real ones."""
    lm = DummyLM({"": {**FIELDS, "answer": answer}})
    if api_key:
        lm.kwargs["api_key"] = api_key
    if extra_headers:
        lm.kwargs["extra_headers"] = dict(extra_headers)
    return lm


class SlowDummyLM(DummyLM):
    """DummyLM that takes `delay` seconds per call, to interrupt a run mid-phase.

    With `event_file`, the start of call number `event_call` (1-based) creates that file: an
    explicit event a test waits for before it signals the job, instead of guessing from the
    job's console output when a phase has begun."""

    def __init__(self, answers, delay: float, event_file: str | None = None, event_call: int = 0):
        super().__init__(answers)
        self.delay = delay
        self.event_file = event_file
        self.event_call = event_call
        self._calls = itertools.count(1)

    def forward(self, prompt=None, messages=None, **kwargs):
        import time

        if next(self._calls) == self.event_call and self.event_file:
            Path(self.event_file).write_text("started\n")
        time.sleep(self.delay)
        return super().forward(prompt=prompt, messages=messages, **kwargs)


def slow_lm(delay: float = 0.5, event_file: str | None = None, event_call: int = 0, **_ignored) -> dspy.LM:
    return SlowDummyLM({"": FIELDS}, delay=delay, event_file=event_file, event_call=event_call)
