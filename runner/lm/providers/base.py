"""Shared machinery of the in-process LiteLLM providers (llamacpp/, mlx/, torch/).

A backend only has to say how to load a model and how to generate token by token
(`Engine.stream`); this module turns that into LiteLLM's CustomLLM interface: blocking and
async completion, real per-token streaming, stop sequences, usage, one lock per loaded model
(dspy.Evaluate runs several threads against one in-process model) and a per-process model cache.
"""

from __future__ import annotations

import abc
import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import litellm
from litellm.types.utils import GenericStreamingChunk, ModelResponse, Usage

# ---------------------------------------------------------------------------------------------
# Options set from the config (`backend:` block) per (backend, model name), read at load time.
# A module-level registry because LiteLLM gives a custom provider only the model string.
# ---------------------------------------------------------------------------------------------
_OPTIONS: dict[tuple[str, str], dict] = {}
_ENGINES: dict[tuple, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def configure(backend: str, model: str, **options: Any) -> None:
    """Remember load options (n_ctx, cache_dir, device, ...) for `backend/model`."""
    _OPTIONS[(backend, model)] = {k: v for k, v in options.items() if v is not None}


def options_for(backend: str, model: str) -> dict:
    return dict(_OPTIONS.get((backend, model), {}))


def cached_engines() -> dict[tuple, Engine]:
    """The models loaded so far in this process (key: backend, path, options)."""
    return dict(_ENGINES)


def clear_engines() -> None:
    """Forget all loaded models (tests, benchmarks measuring load time)."""
    with _ENGINES_LOCK:
        _ENGINES.clear()


# ---------------------------------------------------------------------------------------------
# Generation parameters, chat messages, stop sequences
# ---------------------------------------------------------------------------------------------
@dataclass
class GenParams:
    temperature: float = 0.0
    max_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    top_p: float = 1.0
    seed: int | None = None

    @classmethod
    def from_optional_params(cls, params: dict) -> GenParams:
        """LiteLLM (1.110) hands a custom provider temperature/max_tokens/stop in `optional_params`."""
        stop = params.get("stop") or []
        if isinstance(stop, str):
            stop = [stop]
        max_tokens = params.get("max_tokens") or params.get("max_completion_tokens") or cls.max_tokens
        temperature = params.get("temperature")
        top_p = params.get("top_p")
        return cls(
            temperature=float(temperature) if temperature is not None else 0.0,
            max_tokens=int(max_tokens),
            stop=[s for s in stop if s],
            top_p=float(top_p) if top_p is not None else 1.0,
            seed=params.get("seed"),
        )


def normalize_messages(messages: list[dict]) -> list[dict]:
    """OpenAI-style messages with string content (text parts joined), as chat templates expect."""
    out = []
    for msg in messages:
        content = msg.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        out.append({"role": msg.get("role", "user"), "content": content or ""})
    return out


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


class StopFilter:
    """Cut the output at the first stop string, even when it spans several tokens.

    Text that could still be the start of a stop string is held back until the next token
    decides, so a streamed stop sequence never leaks to the caller.
    """

    def __init__(self, stops: list[str]):
        self.stops = stops
        self.pending = ""
        self.hit = False

    def feed(self, piece: str) -> str:
        if not self.stops:
            return piece
        self.pending += piece
        cut = min((i for i in (self.pending.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.hit = True
            out, self.pending = self.pending[:cut], ""
            return out
        hold = 0
        for stop in self.stops:  # longest suffix of pending that is a prefix of a stop string
            for k in range(min(len(stop) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(stop[:k]):
                    hold = max(hold, k)
                    break
        out = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(self.pending) - hold :]
        return out

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


# ---------------------------------------------------------------------------------------------
# Engine: what a backend implements
# ---------------------------------------------------------------------------------------------
class Engine(Protocol):
    """A loaded model. `stream` is only ever called with `lock` held."""

    lock: threading.Lock
    n_ctx: int | None

    def render(self, messages: list[dict]) -> str:
        """Prompt text for chat `messages` (the model's own chat template, generation prompt added)."""

    def count_tokens(self, prompt: str) -> int:
        """Number of prompt tokens the model sees for `prompt`."""

    def stream(self, prompt: str, params: GenParams) -> Iterator[str]:
        """Generate up to params.max_tokens tokens; yield the text of each token ("" while a
        multi-byte character is incomplete). Ends at the end-of-generation token."""


@dataclass
class Generation:
    """Running state of one call, filled while streaming."""

    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    first_token_s: float | None = None

    def usage(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def _split_model(model: str) -> str:
    """LiteLLM usually strips the provider prefix already; accept it too."""
    for prefix in ("llamacpp/", "mlx/", "torch/"):
        if model.startswith(prefix):
            return model[len(prefix) :]
    return model


def common_prefix_len(a: list[int], b: list[int]) -> int:
    """How many leading tokens `a` and `b` share: what a kept KV cache can still serve."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class HFTokenizerChat:
    """Prompt rendering and tokenization for engines holding a Hugging Face-style `self.tokenizer`
    (mlx-lm's TokenizerWrapper and transformers' tokenizers share this API)."""

    tokenizer: Any

    def render(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def tokens(self, prompt: str) -> list[int]:
        bos = self.tokenizer.bos_token
        return self.tokenizer.encode(prompt, add_special_tokens=not (bos and prompt.startswith(bos)))

    def count_tokens(self, prompt: str) -> int:
        return len(self.tokens(prompt))


class LocalProvider(litellm.CustomLLM, metaclass=abc.ABCMeta):
    """CustomLLM running an in-process model; subclasses set `backend` and implement `load`."""

    backend: str = ""

    @abc.abstractmethod
    def load(self, model: str, options: dict) -> Engine:
        """Load `model` (a name or path) with `options` into an Engine."""

    def cache_key(self, model: str, options: dict) -> tuple:
        return (self.backend, model, tuple(sorted((k, repr(v)) for k, v in options.items())))

    def engine(self, model: str) -> Engine:
        """The loaded model for `model`, loaded once per (backend, model, options) per process."""
        model = _split_model(model)
        options = options_for(self.backend, model)
        key = self.cache_key(model, options)
        engine = _ENGINES.get(key)
        if engine is None:
            with _ENGINES_LOCK:
                engine = _ENGINES.get(key)
                if engine is None:
                    engine = self.load(model, options)
                    _ENGINES[key] = engine
        return engine

    # -- the generation loop shared by all four entry points ---------------------------------
    def generate(self, model: str, messages: list, optional_params: dict, state: Generation) -> Iterator[str]:
        """Yield output text pieces (one per token, stop strings removed); fill `state`."""
        engine = self.engine(model)
        params = GenParams.from_optional_params(optional_params or {})
        prompt = engine.render(normalize_messages(messages))
        start = time.perf_counter()
        with engine.lock:
            state.prompt_tokens = engine.count_tokens(prompt)
            if engine.n_ctx:
                room = engine.n_ctx - state.prompt_tokens
                if room <= 0:
                    raise ValueError(
                        f"{self.backend}: prompt has {state.prompt_tokens} tokens, more than the context window "
                        f"({engine.n_ctx}); raise n_ctx in the backend options or shorten the prompt"
                    )
                params.max_tokens = min(params.max_tokens, room)
            stopper = StopFilter(params.stop)
            state.finish_reason = "stop"
            for piece in engine.stream(prompt, params):
                state.completion_tokens += 1
                if state.first_token_s is None:
                    state.first_token_s = time.perf_counter() - start
                out = stopper.feed(piece)
                if out:
                    state.text += out
                    yield out
                if stopper.hit:
                    break
            else:
                if state.completion_tokens >= params.max_tokens:
                    state.finish_reason = "length"
            tail = stopper.flush() if not stopper.hit else ""
            if tail:
                state.text += tail
                yield tail

    # -- LiteLLM CustomLLM interface -----------------------------------------------------------
    def completion(self, model, messages, api_base, custom_prompt_dict, model_response: ModelResponse,
                   print_verbose, encoding, api_key, logging_obj, optional_params, *args, **kwargs) -> ModelResponse:
        state = Generation()
        for _ in self.generate(model, messages, optional_params, state):
            pass
        model_response.choices[0].message.content = state.text
        model_response.choices[0].finish_reason = state.finish_reason
        model_response.model = f"{self.backend}/{_split_model(model)}"
        model_response.created = int(time.time())
        setattr(model_response, "usage", Usage(**state.usage()))
        return model_response

    def streaming(self, model, messages, api_base, custom_prompt_dict, model_response, print_verbose, encoding,
                  api_key, logging_obj, optional_params, *args, **kwargs) -> Iterator[GenericStreamingChunk]:
        state = Generation()
        for piece in self.generate(model, messages, optional_params, state):
            yield _chunk(piece)
        yield _chunk("", finished=True, finish_reason=state.finish_reason, usage=state.usage())

    async def acompletion(self, model, messages, api_base, custom_prompt_dict, model_response, print_verbose,
                          encoding, api_key, logging_obj, optional_params, *args, **kwargs) -> ModelResponse:
        # Generation is CPU/GPU bound and holds the model lock: keep it off the event loop.
        return await asyncio.to_thread(
            self.completion, model, messages, api_base, custom_prompt_dict, model_response, print_verbose,
            encoding, api_key, logging_obj, optional_params,
        )

    async def astreaming(self, model, messages, api_base, custom_prompt_dict, model_response, print_verbose,
                         encoding, api_key, logging_obj, optional_params, *args, **kwargs
                         ) -> AsyncIterator[GenericStreamingChunk]:
        """Tokens are produced in a worker thread and handed over one by one as they appear."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        done = object()
        cancelled = threading.Event()

        def produce() -> None:
            try:
                for chunk in self.streaming(model, messages, api_base, custom_prompt_dict, model_response,
                                            print_verbose, encoding, api_key, logging_obj, optional_params):
                    if cancelled.is_set():
                        break
                    loop.call_soon_threadsafe(queue.put_nowait, chunk)
            except BaseException as exc:  # re-raised in the consumer
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, done)

        worker = threading.Thread(target=produce, name=f"{self.backend}-stream", daemon=True)
        worker.start()
        try:
            while True:
                item = await queue.get()
                if item is done:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancelled.set()


def _chunk(text: str, finished: bool = False, finish_reason: str = "", usage: dict | None = None) -> GenericStreamingChunk:
    return {
        "text": text,
        "tool_use": None,
        "is_finished": finished,
        "finish_reason": finish_reason,
        "usage": usage,
        "index": 0,
    }
