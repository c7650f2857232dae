"""A DummyLM that answers every prompt, for fast tests of every optimizer path.

DummyLM matches dict keys as substrings of the last message; the empty key matches all.
The answer carries every output field the runner's task and DSPy's optimizers ask for
(ChatAdapter ignores the extra ones).
"""

from __future__ import annotations

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


def scripted_lm(answer: str = "42", **_ignored) -> dspy.LM:
    """`_target_` for tests/conf/model/scripted.yaml; extra model keys are ignored."""
    return DummyLM({"": {**FIELDS, "answer": answer}})


class SlowDummyLM(DummyLM):
    """DummyLM that takes `delay` seconds per call, to interrupt a run mid-phase."""

    def __init__(self, answers, delay: float):
        super().__init__(answers)
        self.delay = delay

    def forward(self, prompt=None, messages=None, **kwargs):
        import time

        time.sleep(self.delay)
        return super().forward(prompt=prompt, messages=messages, **kwargs)


def slow_lm(delay: float = 0.5, **_ignored) -> dspy.LM:
    return SlowDummyLM({"": FIELDS}, delay=delay)
