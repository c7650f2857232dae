"""What a local backend implements, and the one place loaded weights are kept.

A backend (llamacpp, mlx, torch) loads a model file into a `Model`: the weights, a KV cache kept
between calls, and a lock. `Model.stream` generates token by token; when `GenParams.schema` is
set it decodes under that JSON schema, so every token keeps the output valid (llama.cpp's
grammar engine, or llguidance token masks for mlx-lm and transformers: runner/lm/constrain.py).

`load_model` keeps one loaded `Model` per (backend, model file, load options) in this process:
every engine naming the same file with the same options -- LM copies, a GEPA reflection LM or
an LLM judge on the student's model -- uses the same weights and the same lock.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

BACKENDS = ("llamacpp", "mlx", "torch")


@dataclass
class GenParams:
    """One call's generation settings."""

    temperature: float = 0.0
    max_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    top_p: float = 1.0
    seed: int | None = None
    schema: dict | None = None  # a JSON schema the output must satisfy (response_format); None = free text


class Model(Protocol):
    """A loaded model. `stream` is only ever called with `lock` held."""

    lock: threading.Lock
    n_ctx: int | None

    def render(self, messages: list[dict]) -> str:
        """Prompt text for chat `messages` (the model's own chat template, generation prompt added)."""

    def count_tokens(self, prompt: str) -> int:
        """Number of prompt tokens the model sees for `prompt`."""

    def stream(self, prompt: str, params: GenParams) -> Iterator[str]:
        """Generate up to params.max_tokens tokens (under params.schema when set); yield the text of
        each token ("" while a multi-byte character is incomplete). Ends at end-of-generation."""

    def reset(self) -> None:
        """Drop the kept KV cache: the next call evaluates its whole prompt."""


def render_chat_template(template: str, messages: list[dict], bos_token: str = "", eos_token: str = "") -> str:
    """Apply a Jinja chat template (as stored in GGUF / tokenizer_config) with a generation prompt."""
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(
        messages=messages, bos_token=bos_token, eos_token=eos_token, add_generation_prompt=True
    )


def common_prefix_len(a: list[int], b: list[int]) -> int:
    """How many leading tokens `a` and `b` share: what a kept KV cache can still serve."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class HFTokenizerChat:
    """Prompt rendering and tokenization for models holding a Hugging Face-style `self.tokenizer`
    (mlx-lm's TokenizerWrapper and transformers' tokenizers share this API)."""

    tokenizer: Any

    def render(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def tokens(self, prompt: str) -> list[int]:
        bos = self.tokenizer.bos_token
        return self.tokenizer.encode(prompt, add_special_tokens=not (bos and prompt.startswith(bos)))

    def count_tokens(self, prompt: str) -> int:
        return len(self.tokens(prompt))


# ---------------------------------------------------------------------------------------------
# Loaded weights: one Model per (backend, model, options) in this process
# ---------------------------------------------------------------------------------------------
_LOADED: dict[tuple, Model] = {}
_LOAD_LOCK = threading.Lock()


def model_key(backend: str, model: str, options: dict) -> tuple:
    return (backend, model, tuple(sorted((k, repr(v)) for k, v in options.items())))


def load_model(backend: str, model: str, options: dict) -> Model:
    """The loaded model for `backend/model` with these load options, loading it on first use.

    `model` is `embedded`, a local path or a hub id (resolved by runner.lm.embedded)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown local backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    key = model_key(backend, model, options)
    loaded = _LOADED.get(key)
    if loaded is None:
        with _LOAD_LOCK:
            loaded = _LOADED.get(key)
            if loaded is None:
                module = importlib.import_module(f"runner.lm.backends.{backend}")
                loaded = module.load(model, options)
                _LOADED[key] = loaded
    return loaded


def loaded_models() -> dict[tuple, Model]:
    """The models loaded so far in this process (key: backend, model, options)."""
    return dict(_LOADED)


def unload_all() -> None:
    """Forget all loaded models (tests, and benchmarks that measure load time)."""
    with _LOAD_LOCK:
        _LOADED.clear()
