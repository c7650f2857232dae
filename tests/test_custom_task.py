"""task=custom: any JSONL/CSV file + an inline signature + a generic metric, composed through Hydra."""

from __future__ import annotations

import json

import dspy
import pytest
from dspy.utils import DummyLM
from hydra.utils import instantiate

from runner.errors import RunnerError, find_user_error

ROWS = [{"question": f"What is {i} plus {i}?", "answer": str(2 * i)} for i in range(1, 9)]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _custom(compose, data, metric, *extra):
    return compose(["task=custom", "task.signature='question -> answer'", f"task.data={data}", f"metric={metric}", *extra])


@pytest.mark.parametrize("metric", ["exact_match", "f1", "accuracy", "numeric"])
def test_custom_task_composes_loads_and_scores(compose, tmp_path, metric):
    cfg = _custom(compose, _jsonl(tmp_path / "qa.jsonl", ROWS), metric)
    splits = instantiate(cfg.task.splits)
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [4, 2, 2]
    ex = splits["dev"][0]
    assert set(ex.inputs().keys()) == {"question"}
    scorer = instantiate(cfg.metric)
    assert scorer.field is None                      # answer_field null -> the signature's last output
    assert scorer(ex, dspy.Prediction(answer=ex.answer)).score == 1.0
    assert scorer(ex, dspy.Prediction(answer="no idea")).score == 0.0
    assert scorer(ex, None).score == 0.0


def test_custom_llm_judge_composes_and_judges_with_a_dummy_lm(compose, tmp_path):
    cfg = _custom(compose, _jsonl(tmp_path / "qa.jsonl", ROWS), "llm_judge")
    assert cfg.metric._target_ == "runner.dspy_ext.metrics.LLMJudge"
    judge = instantiate(cfg.metric, judge_lm=None)   # the model group is not built in tests
    ex = instantiate(cfg.task.splits)["dev"][0]
    with dspy.context(lm=DummyLM([{"equivalent": "True", "reason": "same number"}])):
        out = judge(ex, dspy.Prediction(answer=f"It is {ex.answer}"))
    assert out.score == 1.0 and out.feedback == "same number"


def test_custom_program_runs_end_to_end_with_dummy_lm(compose, tmp_path):
    cfg = _custom(compose, _jsonl(tmp_path / "qa.jsonl", ROWS), "exact_match")
    program = instantiate(cfg.program)
    splits = instantiate(cfg.task.splits)
    scorer = instantiate(cfg.metric)
    answers = [{"answer": ex.answer if i % 2 == 0 else "wrong"} for i, ex in enumerate(splits["test"])]
    with dspy.context(lm=DummyLM(answers)):
        scores = [scorer(ex, program(**ex.inputs())).score for ex in splits["test"]]
    assert scores == [1.0, 0.0]


def test_row_missing_a_field_names_field_and_row(compose, tmp_path):
    rows = ROWS[:5] + [{"question": "What is 3 plus 4?"}] + ROWS[5:]
    cfg = _custom(compose, _jsonl(tmp_path / "bad.jsonl", rows), "exact_match")
    with pytest.raises(Exception) as err:
        instantiate(cfg.task.splits)
    # Hydra wraps errors raised inside instantiate; the entrypoint reports the RunnerError behind it
    user_error = find_user_error(err.value)
    assert isinstance(user_error, RunnerError)
    msg = str(user_error)
    assert "row 6" in msg and "'answer'" in msg and "bad.jsonl" in msg


def test_row_missing_a_field_direct(tmp_path):
    from runner.job.datasets import load_file_splits

    rows = ROWS[:2] + [{"answer": "4"}] + ROWS[2:]
    with pytest.raises(RunnerError, match=r"row 3 is missing field 'question'"):
        load_file_splits(str(_jsonl(tmp_path / "d.jsonl", rows)), "question -> answer")


def test_blank_field_is_missing(tmp_path):
    from runner.job.datasets import load_file_splits

    rows = ROWS[:3] + [{"question": "  ", "answer": "1"}]
    with pytest.raises(RunnerError, match=r"row 4 is missing field 'question'"):
        load_file_splits(str(_jsonl(tmp_path / "d.jsonl", rows)), "question -> answer")


def test_csv_with_split_column(tmp_path):
    from runner.job.datasets import load_file_splits

    path = tmp_path / "d.csv"
    path.write_text("question,answer,split\nq1,a1,train\nq2,a2,validation\nq3,a3,test\nq4,a4,train\n", encoding="utf-8")
    splits = load_file_splits(str(path), "question -> answer")
    assert [[e.question for e in splits[s]] for s in ("train", "dev", "test")] == [["q1", "q4"], ["q2"], ["q3"]]


def test_bad_json_line_and_tiny_file(tmp_path):
    from runner.job.datasets import load_file_splits

    bad = tmp_path / "b.jsonl"
    bad.write_text('{"question": "q", "answer": "a"}\n{"question": \n', encoding="utf-8")
    with pytest.raises(RunnerError, match="line 2 is not valid JSON"):
        load_file_splits(str(bad), "question -> answer")
    with pytest.raises(RunnerError, match="too few"):
        load_file_splits(str(_jsonl(tmp_path / "t.jsonl", ROWS[:2])), "question -> answer")
    with pytest.raises(RunnerError, match="not found"):
        load_file_splits(str(tmp_path / "missing.jsonl"), "question -> answer")


def test_committed_example_datasets_load():
    from runner.job.datasets import load_file_splits
    from runner.validate import EXAMPLES

    for name in ("qa.jsonl", "arithmetic.jsonl"):
        splits = load_file_splits(str(EXAMPLES / name), "question -> answer")
        assert all(splits[s] for s in ("train", "dev", "test"))


def test_generic_metrics_grade():
    from runner.dspy_ext.metrics import Accuracy, ExactMatch, Numeric, TokenF1

    ex = dspy.Example(question="q", answer="the Pacific Ocean").with_inputs("question")
    assert ExactMatch("answer")(ex, dspy.Prediction(answer="Pacific ocean.")).score == 1.0
    f1 = TokenF1("answer")(ex, dspy.Prediction(answer="Pacific"))
    assert 0 < f1.score < 1 and "ocean" in f1.feedback
    assert Accuracy("answer")(ex, dspy.Prediction(answer=" THE PACIFIC OCEAN ")).score == 1.0
    num = dspy.Example(question="q", answer="1,234").with_inputs("question")
    assert Numeric("answer")(num, dspy.Prediction(answer="about 1234")).score == 1.0
    assert Numeric("answer")(num, dspy.Prediction(answer="none")).score == 0.0


@pytest.mark.parametrize("spec", ["question answer", "question =>answer", "Signature."])
def test_a_signature_that_is_neither_form_says_both_forms(spec):
    from runner.errors import RunnerError
    from runner.programs.signature import resolve_signature

    with pytest.raises(RunnerError) as err:
        resolve_signature(spec)
    assert "neither an inline signature nor a class path" in err.value.message and "->" in err.value.hint
