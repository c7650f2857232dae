"""LenientChatAdapter: identical to ChatAdapter on good replies, recovers sloppy ones, stops early."""

from __future__ import annotations

import dspy
import pytest
from dspy.utils.exceptions import AdapterParseError

from runner.dspy_ext.adapters.lenient import COMPLETED_STOP, LenientChatAdapter


class QA(dspy.Signature):
    """Answer."""

    question: str = dspy.InputField()
    answer: float = dspy.OutputField()


class Plan(dspy.Signature):
    """Plan."""

    goal: str = dspy.InputField()
    rank: int = dspy.OutputField()
    optimizer: str = dspy.OutputField()


def test_well_formed_reply_parses_like_chat_adapter():
    text = "[[ ## answer ## ]]\n12.5\n\n[[ ## completed ## ]]"
    assert LenientChatAdapter().parse(QA, text) == dspy.ChatAdapter().parse(QA, text) == {"answer": 12.5}


@pytest.mark.parametrize("text,expected", [
    # headers as SmolLM2-135M writes them (seen from the real model), with what a stop at
    # "## completed ##" leaves behind
    ("[[## answer ## ]]\n12.5\n\n[[## completed ## ]]\n12.5", 12.5),
    ("[[ ##answer## ]]\n12.5\n\n[[", 12.5),
    ("[[ # answer # ]] 12.5", 12.5),
])
def test_header_variants_parse_as_headers(text, expected):
    assert LenientChatAdapter().parse(QA, text) == {"answer": expected}


def test_header_variants_split_multi_field_replies():
    text = "[[## rank ## ]]\n8\n\n[[ ##optimizer## ]]\nadamw\n\n[[ "
    assert LenientChatAdapter().parse(Plan, text) == {"rank": 8, "optimizer": "adamw"}


@pytest.mark.parametrize("text,expected", [
    ("answer: 42", 42.0),
    ("The total is 3 + 4 = 7", 7.0),
    ("```\n1,250\n```", 1250.0),
])
def test_single_field_recovery(text, expected):
    with pytest.raises(AdapterParseError):
        dspy.ChatAdapter(use_json_adapter_fallback=False).parse(QA, text)
    assert LenientChatAdapter().parse(QA, text) == {"answer": expected}


def test_multi_field_recovery_and_failure():
    adapter = LenientChatAdapter()
    assert adapter.parse(Plan, "rank: 8\noptimizer: adamw") == {"rank": 8, "optimizer": "adamw"}
    with pytest.raises(AdapterParseError):
        adapter.parse(Plan, "I would use a small rank.")
    with pytest.raises(AdapterParseError):
        adapter.parse(QA, "no number here")


def test_stop_sequences_added_to_lm_call():
    seen = {}

    class Recorder(dspy.utils.DummyLM):
        def __call__(self, *args, **kwargs):
            seen.update(kwargs)
            return super().__call__(*args, **kwargs)

    lm = Recorder([{"answer": "3"}])
    with dspy.context(lm=lm, adapter=LenientChatAdapter()):
        assert dspy.Predict(QA)(question="1+2?").answer == 3.0
    assert COMPLETED_STOP in seen["stop"] and "\n\n[[ ## answer ## ]]" in seen["stop"]
