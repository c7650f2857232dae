"""adapter=structured: which LMs get a schema, what it contains, and the prompt-only fallback."""

from __future__ import annotations

import json
from typing import Annotated, Literal

import dspy
import pydantic
import pytest
from dspy.utils import DummyLM

from runner.dspy_ext.adapters import StructuredAdapter, output_model
from runner.dspy_ext.adapters.structured import enforces_schema


class Plan(dspy.Signature):
    """Plan a fine-tuning run."""

    model: str = dspy.InputField()
    precision: Literal["16bit", "8bit", "4bit"] = dspy.OutputField()
    batch_size: int = dspy.OutputField(ge=1, le=16)
    tags: Annotated[list[str], pydantic.Field(max_length=2)] = dspy.OutputField()


def test_the_schema_keeps_every_field_constraint():
    schema = output_model(Plan).model_json_schema()
    props = schema["properties"]
    assert list(props) == ["precision", "batch_size", "tags"] and schema["required"] == list(props)
    assert props["precision"]["enum"] == ["16bit", "8bit", "4bit"]
    assert (props["batch_size"]["minimum"], props["batch_size"]["maximum"]) == (1, 16)
    assert props["tags"]["maxItems"] == 2 and schema["additionalProperties"] is False


def test_which_lms_get_a_schema():
    from runner.lm.build import build_lm
    from runner.lm.engine import local_lm

    assert enforces_schema(local_lm("llamacpp/embedded", cache=False), Plan)  # declared by the engine
    assert enforces_schema(build_lm("openai/my-model", response_schema=True), Plan)  # model=server declares it
    assert not enforces_schema(build_lm("openai/my-model"), Plan)  # a model name DSPy's tables do not know
    assert not enforces_schema(DummyLM([{}]), Plan)

    class Open(dspy.Signature):
        """x"""

        q: str = dspy.InputField()
        anything: dict[str, str] = dspy.OutputField()

    assert not enforces_schema(local_lm("llamacpp/embedded", cache=False), Open)  # no closed schema exists


def test_an_lm_without_schema_support_gets_json_asked_for_in_the_prompt():
    lm = DummyLM([{"precision": "4bit", "batch_size": "4", "tags": '["a"]'}], adapter=dspy.JSONAdapter())
    with dspy.context(lm=lm, adapter=StructuredAdapter()):
        pred = dspy.Predict(Plan)(model="Llama-2-7B")
    assert (pred.precision, pred.batch_size, pred.tags) == ("4bit", 4, ["a"])
    entry = lm.history[-1]
    assert "response_format" not in entry["kwargs"]
    assert "Respond with a JSON object" in entry["messages"][-1]["content"]  # the format asked for in words


def test_under_an_enforced_schema_the_redundant_format_line_is_left_out():
    from tests_support import recording_lm

    lm, model = recording_lm('{"precision": "4bit", "batch_size": 4, "tags": []}')
    with dspy.context(lm=lm, adapter=StructuredAdapter()):
        dspy.Predict(Plan)(model="Llama-2-7B")
    last_user = json.loads(model.prompts[-1])[-1]["content"]
    assert "Respond with a JSON object" not in last_user and "Llama-2-7B" in last_user
    assert model.calls[-1].schema["properties"]["batch_size"]["maximum"] == 16


@pytest.mark.parametrize("option, adapter, threads", [("server", "StructuredAdapter", 8),
                                                       ("litellm", "LenientChatAdapter", 8),
                                                       ("llamacpp", "StructuredAdapter", 1)])
def test_model_options_choose_their_adapter_and_evaluation(compose, option, adapter, threads):
    cfg = compose([f"model={option}"])
    assert cfg.adapter._target_.endswith(adapter) and cfg.eval.num_threads == threads
    assert compose([f"model={option}", "adapter=plain"]).adapter._target_.endswith("PlainAdapter")  # the command line wins
