"""LenientStreamListener: streams a field whose headers the model wrote loosely, token by token."""

from __future__ import annotations

import dspy
import pytest
from litellm import ModelResponseStream
from litellm.types.utils import Delta, StreamingChoices

from runner.dspy_ext.adapters.lenient import LenientChatAdapter
from runner.dspy_ext.adapters import StructuredAdapter
from runner.dspy_ext.adapters.plain import PlainAdapter
from runner.dspy_ext.streaming import LenientStreamListener


def _chunk(text: str) -> ModelResponseStream:
    return ModelResponseStream(choices=[StreamingChoices(delta=Delta(content=text))])


def _listen(pieces: list[str], field: str = "answer", adapter=None, signature=None) -> list[tuple[str, bool]]:
    with dspy.context(adapter=adapter or LenientChatAdapter()):
        listener = LenientStreamListener(field)
        if signature is not None:
            listener.predict = dspy.Predict(signature)
        out = [listener.receive(_chunk(p)) for p in pieces]
        out.append(listener.finalize())
    return [(r.chunk, r.is_last_chunk) for r in out if r is not None]


def test_loose_header_streams_the_value_as_it_arrives():
    # the shape of a real SmolLM2-135M reply, cut by the "## completed ##" stop string
    got = _listen(["[[", "##", " answer", " ##", " ]]", "\n", "M", "ona", "ke", "\n\n", "[["])
    assert [c for c, _ in got if c] == ["M", "ona", "ke"]
    assert got[-1][1] is True and "".join(c for c, _ in got) == "Monake"


def test_next_header_ends_the_field_and_earlier_fields_are_skipped():
    pieces = ["[[ ## reasoning ## ]]\n", "think", "\n\n", "[[ ##", "answer## ]]", "\n", "Lake ", "Bai", "kal",
              "\n\n[", "[ ## comp", "leted ## ]]"]
    got = _listen(pieces)
    assert "".join(c for c, _ in got) == "Lake Baikal" and got[-1][1] is True
    assert all(c != "think" for c, _ in got)


def test_brackets_that_never_become_a_header_are_sent():
    got = _listen(["[[ ## answer ## ]]\n", "see [", "1]", " and [[x"])
    assert "".join(c for c, _ in got) == "see [1] and [[x"


def test_no_header_for_the_field_streams_nothing():
    assert _listen(["answer: 42"]) == []


@pytest.mark.parametrize("adapter", [dspy.JSONAdapter, StructuredAdapter])
def test_json_string_values_stream_decoded(adapter):
    got = _listen(['{"reasoning": "the ', 'answer: x", "answer', '": ', '"Par', 'is, \\"the ', 'city\\', '" \\u00e9', 'lys\\u00e9e"}'],
                  adapter=adapter())
    assert "".join(c for c, _ in got) == 'Paris, "the city" \u00e9lys\u00e9e' and got[-1][1] is True
    assert all(not last for _, last in got[:-1])


def test_json_non_string_values_stream_as_written():
    got = _listen(['{"rank": 1', '6, "answer": 0.', '000', '2', '}'], field="answer", adapter=StructuredAdapter())
    assert "".join(c for c, _ in got) == "0.0002" and got[-1][1] is True
    got = _listen(['{"answer": ["a", "b,', ' c"], "n": 1}'], adapter=dspy.JSONAdapter())
    assert "".join(c for c, _ in got) == '["a", "b, c"]'
    got = _listen(['{"answer": true }'], adapter=dspy.JSONAdapter())
    assert "".join(c for c, _ in got) == "true"


def test_json_field_that_never_arrives_streams_nothing():
    assert _listen(['{"other": "x"}'], adapter=dspy.JSONAdapter()) == []


@pytest.mark.parametrize("reuse", [True, False])
def test_reuse_after_the_end(reuse):
    with dspy.context(adapter=LenientChatAdapter()):
        listener = LenientStreamListener("answer", allow_reuse=reuse)
        for p in ["[[ ## answer ## ]]\nA", "\n\n[[ ## completed ## ]]"]:
            listener.receive(_chunk(p))
        again = listener.receive(_chunk("[[ ## answer ## ]]\nB\n\n[[ ## completed ## ]]"))
    assert (again is not None and again.chunk == "B") is reuse


@pytest.mark.parametrize("pieces, expected", [(["posi", "tive", "\n"], "positive"),
                                              (["sentiment", ": ", "neg", "ative"], "negative"),
                                              (["se"], "se")])
def test_plain_bare_answers_stream(pieces, expected):
    got = _listen(pieces, field="sentiment", adapter=PlainAdapter(), signature="text -> sentiment")
    assert "".join(c for c, _ in got) == expected and got[-1][1] is True


def test_plain_named_lines_stream_the_field():
    got = _listen(["rank: 16\nlear", "ning_rate", ": 2e-4", "\nbatch: 4"], field="learning_rate",
                  adapter=PlainAdapter(), signature="a -> rank, learning_rate, batch")
    assert "".join(c for c, _ in got) == "2e-4" and got[-1][1] is True
