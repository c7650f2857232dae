"""Constrained decoding: from a `response_format` to the tokens a model may write next.

`schema_of` reads every shape `response_format` arrives in -- DSPy's canonical
`{"type": "json_schema", "schema": ...}`, OpenAI's `{"type": "json_schema", "json_schema": {...}}`,
`{"type": "json_object"}` and a pydantic model class -- as one JSON schema (None: free text).

The schema is then enforced while decoding, never repaired afterwards:

* llama.cpp: its own grammar engine (the schema converted to GBNF by llama-cpp-python's
  `json_schema_to_gbnf`, applied by llama.cpp's grammar sampler);
* mlx-lm and transformers: llguidance (`JsonConstraint`), which compiles the schema into a
  token-level matcher over the model's own tokenizer and gives, before every step, the set of
  tokens that keep the output a valid prefix (~microseconds per step; Rust, no further Python
  dependency). Tokens outside the set get -inf logits; once the JSON is complete only the
  end-of-generation token is allowed.
"""

from __future__ import annotations

import functools
import json
from typing import Any

ANY_JSON_OBJECT = {"type": "object"}


def schema_of(response_format: Any) -> dict | None:
    """The JSON schema a `response_format` asks for; None for free text."""
    if response_format is None:
        return None
    if isinstance(response_format, type):
        import pydantic

        if issubclass(response_format, pydantic.BaseModel):
            return response_format.model_json_schema()
        raise TypeError(f"response_format class {response_format.__name__} is not a pydantic model")
    if not isinstance(response_format, dict):
        raise TypeError(f"response_format must be a dict or a pydantic model class, got {type(response_format).__name__}")
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return dict(response_format.get("schema") or ANY_JSON_OBJECT)  # llama.cpp server's {"schema": ...} too
    if kind == "json_schema":
        inner = response_format.get("json_schema")
        schema = inner.get("schema") if isinstance(inner, dict) else response_format.get("schema")
        if not isinstance(schema, dict):
            raise ValueError("response_format json_schema has no 'schema' object")
        return schema
    raise ValueError(f"unsupported response_format type {kind!r}: use json_schema, json_object or text")


def schema_key(schema: dict) -> str:
    """A schema as a string, for caching what is compiled from it. Key order is kept: the order of
    `properties` is the order the fields are written in (reasoning before the answer)."""
    return json.dumps(schema, separators=(",", ":"))


# JSON forbids raw control characters inside strings. llama.cpp's own converter
# (json-schema-to-grammar.cpp) writes the string character rule that way; the Python port in
# llama-cpp-python allows any character but `"` and `\`, so a raw newline could end up inside a
# "constrained" string and json.loads would reject the reply. The rule is tightened to the C++ one.
_PORT_CHAR = 'char ::= [^"\\\\] |'
_JSON_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'


@functools.lru_cache(maxsize=64)
def llama_gbnf(schema_json: str) -> str:
    """llama.cpp's grammar (GBNF) for a schema (cached: the conversion is Python and not free)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    return json_schema_to_gbnf(schema_json).replace(_PORT_CHAR, _JSON_CHAR)


@functools.lru_cache(maxsize=64)
def llguidance_grammar(schema_json: str) -> str:
    import llguidance

    return llguidance.LLMatcher.grammar_from_json_schema(schema_json)


def llguidance_tokenizer(hf_tokenizer, eos_token_ids) -> Any:
    """llguidance's view of a Hugging Face fast tokenizer, from its serialized Rust tokenizer
    (`backend_tokenizer`, which mlx-lm's TokenizerWrapper passes through). About a second to
    build: a model keeps it."""
    import copy

    import llguidance

    rust = copy.copy(hf_tokenizer.backend_tokenizer)
    rust.no_padding()
    rust.no_truncation()
    return llguidance.LLTokenizer(rust.to_str(), eos_token=sorted(int(t) for t in eos_token_ids))


class JsonConstraint:
    """The allowed next tokens of one generation under a JSON schema (llguidance)."""

    def __init__(self, tokenizer, schema: dict):
        import llguidance
        import llguidance.numpy

        self.matcher = llguidance.LLMatcher(tokenizer, llguidance_grammar(schema_key(schema)), log_level=0)
        if self.matcher.is_error():
            raise ValueError(f"response_format schema cannot be enforced: {self.matcher.get_error()}")
        self.bitmask = llguidance.numpy.allocate_token_bitmask(1, tokenizer.vocab_size)

    def allowed(self, width: int):
        """A bool numpy array over `width` logits (the model's, which may exceed the tokenizer's
        vocabulary): True for tokens the schema allows next."""
        import llguidance.numpy
        import numpy as np

        llguidance.numpy.fill_next_token_bitmask(self.matcher, self.bitmask)
        bits = np.unpackbits(self.bitmask.view(np.uint8), bitorder="little").astype(bool)
        if bits.size >= width:
            return bits[:width]
        return np.concatenate([bits, np.zeros(width - bits.size, dtype=bool)])

    def advance(self, token: int) -> None:
        """Feed the token that was sampled (always one `allowed()` returned)."""
        if not self.matcher.consume_token(int(token)):
            raise RuntimeError(f"constrained decoding: token {token} rejected: {self.matcher.get_error()}")

    @property
    def done(self) -> bool:
        """The output is complete: only end-of-generation may follow."""
        return self.matcher.is_stopped()
