"""PlainAdapter: a plain question for small models, bare answers parsed back into typed fields."""

from __future__ import annotations

import dspy
import pytest
from dspy.utils.exceptions import AdapterParseError

from runner.errors import find_user_error
from runner.dspy_ext.adapters.plain import PlainAdapter
from signatures.lora import ChooseLoraConfig
from signatures.sentiment import ClassifySentiment


def test_format_is_one_plain_user_turn_with_demos_as_earlier_turns():
    demo = dspy.Example(text="Great fun.", sentiment="positive")
    messages = PlainAdapter().format(ClassifySentiment, [demo, dspy.Example(text="no label")], {"text": "Dull."})
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]  # the incomplete demo is skipped
    assert messages[1]["content"] == "positive"
    last = messages[-1]["content"]
    assert "text: Dull." in last and "one of: positive, negative" in last and "[[" not in last


@pytest.mark.parametrize("reply,expected", [
    ("Positive.", "positive"), ("sentiment: negative", "negative"), ("The sentence is negative.", "negative"),
    ("[[ ## sentiment ## ]]\npositive\n\n[[ ## completed ## ]]", "positive"),
])
def test_single_literal_answers(reply, expected):
    assert PlainAdapter().parse(ClassifySentiment, reply) == {"sentiment": expected}


@pytest.mark.parametrize("reply", ["It is positive, not negative.", "I cannot tell.", ""])
def test_unclear_answers_raise(reply):
    with pytest.raises(AdapterParseError):
        PlainAdapter().parse(ClassifySentiment, reply)


def test_several_outputs_as_name_value_lines():
    demo = dspy.Example(base_model="llama-2-7b", seq_len=512, gpu_memory_gb=24, quantization="4bit", rank=16,
                        batch_size=4, learning_rate=2e-4)
    messages = PlainAdapter().format(ChooseLoraConfig, [demo], {k: demo[k] for k in ChooseLoraConfig.input_fields})
    assert messages[1]["content"].splitlines()[:2] == ["quantization: 4bit", "rank: 16"]
    assert "rank: <a whole number>" in messages[-1]["content"]
    reply = "quantization: 4bit\nrank: 8\nbatch_size: 2\nlearning_rate: 0.0002"
    assert PlainAdapter().parse(ChooseLoraConfig, reply) == {"quantization": "4bit", "rank": 8, "batch_size": 2,
                                                             "learning_rate": 0.0002}


def test_predict_round_trip_through_an_lm():
    class Replies(dspy.BaseLM):
        def __init__(self):
            super().__init__(model="replies")
            self.prompts = []

        def forward(self, prompt=None, messages=None, **kwargs):
            from types import SimpleNamespace

            self.prompts.append(messages)
            message = SimpleNamespace(content="Negative", tool_calls=None)
            return SimpleNamespace(choices=[SimpleNamespace(message=message, finish_reason="stop")],
                                   usage={}, model="replies")

    lm = Replies()
    with dspy.context(lm=lm, adapter=PlainAdapter()):
        assert dspy.Predict(ClassifySentiment)(text="Dull.").sentiment == "negative"
    assert lm.prompts[0][-1]["role"] == "user"


def test_unparseable_replies_become_one_clear_error():
    exc = AdapterParseError(adapter_name="ChatAdapter", signature=ClassifySentiment,
                            lm_response="```python\nx = 1\n```")
    wrapped = RuntimeError("compile failed")
    wrapped.__cause__ = exc
    err = find_user_error(wrapped)
    assert err is not None and "did not parse" in str(err) and "adapter=plain" in err.hint
    assert "python x = 1" in str(err)
