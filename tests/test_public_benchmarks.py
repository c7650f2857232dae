"""The committed public benchmarks (GSM8K, VADER movie-review sentiment): data, licence, splits, metric."""

from __future__ import annotations

import json

import dspy
import pytest

from runner.errors import RunnerError
from signatures import gsm8k, sentiment


@pytest.mark.parametrize("module,rows", [(gsm8k, {"train": 400, "test": 300}),
                                         (sentiment, {"train": 400, "test": 300})])
def test_committed_data_and_licence(module, rows):
    assert "MIT" in (module.DATA_DIR / "LICENSE").read_text()
    assert (module.DATA_DIR / "README.md").is_file()
    for name, n in rows.items():
        assert len(module._read(name)) == n


def test_sentiment_data_is_balanced_polar_and_disjoint():
    train, test = sentiment._read("train"), sentiment._read("test")
    for rows in (train, test):
        labels = [r["sentiment"] for r in rows]
        assert labels.count("positive") == labels.count("negative")
        assert all((r["rating"] > 0) == (r["sentiment"] == "positive") and abs(r["rating"]) >= 1.0 for r in rows)
    assert not {r["text"] for r in train} & {r["text"] for r in test}


@pytest.mark.parametrize("module", [gsm8k, sentiment])
def test_splits_are_seeded_and_disjoint(module):
    a = module.load_splits(seed=1, n_train=8, n_dev=8, n_test=10)
    b = module.load_splits(seed=1, n_train=8, n_dev=8, n_test=10)
    c = module.load_splits(seed=2, n_train=8, n_dev=8, n_test=10)
    key = lambda ex: json.dumps(dict(ex.inputs()))  # noqa: E731
    assert [key(e) for e in a["dev"]] == [key(e) for e in b["dev"]] != [key(e) for e in c["dev"]]
    assert not {key(e) for e in a["train"]} & {key(e) for e in a["dev"]}
    assert len(a["test"]) == 10
    with pytest.raises(RunnerError, match="n_train"):
        module.load_splits(n_train=400, n_dev=1)


def test_sentiment_metric_and_feedback():
    ex = dspy.Example(text="A lovely film.", sentiment="positive", rating=2.6).with_inputs("text")
    assert sentiment.metric(ex, dspy.Prediction(sentiment="positive")).score == 1.0
    assert sentiment.metric(ex, dspy.Prediction(sentiment="Positive.")).score == 1.0
    wrong = sentiment.metric(ex, dspy.Prediction(sentiment="negative"))
    assert wrong.score == 0.0 and "+2.60" in wrong.feedback and "positive" in wrong.feedback
    assert sentiment.metric(ex, dspy.Prediction(sentiment="")).score == 0.0
    assert sentiment.metric(ex, None).score == 0.0


def test_gsm8k_metric_reads_the_number():
    ex = dspy.Example(question="q", answer=18.0, solution="9 * 2 = 18").with_inputs("question")
    assert gsm8k.metric(ex, dspy.Prediction(answer="$18")).score == 1.0
    wrong = gsm8k.metric(ex, dspy.Prediction(answer=17))
    assert wrong.score == 0.0 and "9 * 2 = 18" in wrong.feedback


def test_malformed_data_file_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "train.jsonl").write_text('{"text": "fine", "sentiment": "positive", "rating": 2}\n{"text": "x"}\n')
    monkeypatch.setattr(sentiment, "DATA_DIR", tmp_path)
    with pytest.raises(RunnerError, match="line 2 is malformed"):
        sentiment._read("train")
    with pytest.raises(RunnerError, match="data file missing"):
        sentiment._read("test")
