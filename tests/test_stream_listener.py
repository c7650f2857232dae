"""LenientStreamListener: streams a field whose headers the model wrote loosely, token by token."""

from __future__ import annotations

import dspy
import pytest
from litellm import ModelResponseStream
from litellm.types.utils import Delta, StreamingChoices

from runner.adapters import LenientChatAdapter
from runner.stream_listener import LenientStreamListener


def _chunk(text: str) -> ModelResponseStream:
    return ModelResponseStream(choices=[StreamingChoices(delta=Delta(content=text))])


def _listen(pieces: list[str], field: str = "answer", adapter=None) -> list[tuple[str, bool]]:
    with dspy.context(adapter=adapter or LenientChatAdapter()):
        listener = LenientStreamListener(field)
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


def test_json_adapter_keeps_dspy_logic():
    got = _listen(['{"answer": ', '"Par', 'is"}'], adapter=dspy.JSONAdapter())
    assert "Paris" in "".join(c for c, _ in got) and got[-1][1] is True  # DSPy's JSON listener: raw JSON text


@pytest.mark.parametrize("reuse", [True, False])
def test_reuse_after_the_end(reuse):
    with dspy.context(adapter=LenientChatAdapter()):
        listener = LenientStreamListener("answer", allow_reuse=reuse)
        for p in ["[[ ## answer ## ]]\nA", "\n\n[[ ## completed ## ]]"]:
            listener.receive(_chunk(p))
        again = listener.receive(_chunk("[[ ## answer ## ]]\nB\n\n[[ ## completed ## ]]"))
    assert (again is not None and again.chunk == "B") is reuse
