"""runner.validate: its checks catch broken signatures, datasets and metrics, and pass the real configs."""

from __future__ import annotations

import dspy
import pytest

from runner import validate as v


class Described(dspy.Signature):
    """A described signature."""

    question: str = dspy.InputField(desc="a question")
    answer: int = dspy.OutputField(desc="a number")


class Undescribed(dspy.Signature):
    """One field lacks a description."""

    question: str = dspy.InputField(desc="a question")
    answer: int = dspy.OutputField()


def _ex(q, a):
    return dspy.Example(question=q, answer=a).with_inputs("question")


def test_check_signature():
    assert v.check_signature(Described) == []
    assert v.check_signature(Undescribed) == ["field 'answer' has no description"]
    assert v.check_signature(dspy.Signature("question -> answer"), require_descriptions=False) == []


def test_check_splits_finds_empty_missing_uninput_and_overlap():
    good = {"train": [_ex("a", 1)], "dev": [_ex("b", 2)], "test": [_ex("c", 3)]}
    assert v.check_splits(good, Described) == []
    bad = {"train": [_ex("a", 1), dspy.Example(question="x", answer=1)], "dev": [_ex("a", 5), _ex("d", None)], "test": []}
    problems = " | ".join(v.check_splits(bad, Described))
    assert "split 'test' is empty" in problems
    assert "train[1] inputs are []" in problems
    assert "dev[0] also appears in split 'train'" in problems
    assert "dev[1] lacks fields ['answer']" in problems


def test_check_metric_catches_raising_and_wrong_metrics():
    examples = [_ex("a", 1), _ex("b", 2)]
    adapters = {"chat": dspy.ChatAdapter(), "json": dspy.JSONAdapter()}

    def good(example, pred, trace=None, pred_name=None, pred_trace=None):
        got = getattr(pred, "answer", None) if pred is not None else None
        return dspy.Prediction(score=float(got == example.answer), feedback="")

    def raises_on_none(example, pred, trace=None, pred_name=None, pred_trace=None):
        return dspy.Prediction(score=float(pred.answer == example.answer), feedback="")

    def never_right(example, pred, trace=None, pred_name=None, pred_trace=None):
        return dspy.Prediction(score=0.5, feedback="")

    def out_of_range(example, pred, trace=None, pred_name=None, pred_trace=None):
        return dspy.Prediction(score=2.0 if pred is None else float(pred.answer == example.answer), feedback="")

    assert v.check_metric(good, Described, examples, adapters) == ([], None)
    assert any("raised on a None prediction" in p for p in v.check_metric(raises_on_none, Described, examples, adapters)[0])
    assert any("scores 0.500 < 0.99" in p for p in v.check_metric(never_right, Described, examples, adapters)[0])
    assert any("outside [0, 1]" in p for p in v.check_metric(out_of_range, Described, examples, adapters)[0])


def test_gold_that_does_not_parse_is_reported():
    """A label outside a Literal's values cannot come back from the LM: the round trip must flag it."""
    from typing import Literal

    class Pick(dspy.Signature):
        """Pick one."""

        question: str = dspy.InputField(desc="q")
        choice: Literal["a", "b"] = dspy.OutputField(desc="a or b")

    def metric(example, pred, trace=None, pred_name=None, pred_trace=None):
        return dspy.Prediction(score=float(getattr(pred, "choice", None) == example.choice), feedback="")

    ex = dspy.Example(question="q", choice="c").with_inputs("question")
    problems, _ = v.check_metric(metric, Pick, [ex], {"chat": dspy.ChatAdapter()})
    assert any("do not parse with adapter chat" in p for p in problems)


def test_real_configs_validate_without_building_a_model(monkeypatch):
    import runner.lm.build

    def no_model(*args, **kwargs):
        raise AssertionError("validate must not instantiate the model group")

    monkeypatch.setattr(runner.lm.build, "auto_lm", no_model)
    checks = v.validate(tasks=["lora", "diffusion", "clip", "custom", "gsm8k"], metrics=["task", "exact_match", "numeric", "llm_judge"],
                        programs=["predict", "chain_of_thought", "load"], max_examples=6)
    assert len(checks) == 5 * 4 * 3
    failed = [(c.task, c.metric, c.program, c.notes) for c in checks if c.status == "FAIL"]
    assert failed == []
    by = {(c.task, c.metric, c.program): c for c in checks}
    assert by[("clip", "numeric", "predict")].status == "n/a"          # strategy is not a number
    assert by[("lora", "numeric", "predict")].status == "ok"           # batch_size is
    assert any("metric not instantiated" in n for n in by[("custom", "llm_judge", "predict")].notes)
    assert any("program not instantiated" in n for n in by[("gsm8k", "task", "load")].notes)
    assert any("gold >= 0.99" in n for n in by[("lora", "task", "predict")].notes)


def test_unknown_option_fails():
    checks = v.validate(tasks=["no_such_task"], metrics=["task"], programs=["predict"])
    assert [c.status for c in checks] == ["FAIL"]
    assert "compose failed" in checks[0].notes[0]


def test_every_option_is_discovered():
    assert {"lora", "diffusion", "clip", "federated", "custom", "gsm8k", "sentiment"} <= set(v.options("task"))
    assert {"exact_match", "f1", "accuracy", "numeric", "llm_judge", "task"} <= set(v.options("metric"))
    assert {"predict", "chain_of_thought"} <= set(v.options("program"))


@pytest.mark.parametrize("metric", ["numeric", "exact_match"])
def test_custom_uses_a_committed_example_file(metric):
    path = v.custom_data(metric)
    assert path.is_file()
    assert f"task.data={path}" in v.overrides_for("custom", metric, "predict")
