"""Local models as DSPy engines: `dspy.LM("llamacpp/embedded", engine=LocalEngine("llamacpp"))`.

DSPy 3.4 runs an LM on a custom engine, an object with `complete(Request) -> Response` and
`stream(Request)` (dspy.clients.engines.base); DSPy keeps its cache, retries, history, callbacks,
usage tracking and streaming listeners around it. `LocalEngine` runs a model in this process
through a backend (runner/lm/backends: llama.cpp, mlx-lm, transformers) and declares what it
honours, so DSPy's adapters ask the engine instead of a model catalogue: `response_format`
(a JSON schema, or JSON mode) with constrained decoding, stop sequences, temperature, top_p,
seed and max_tokens. `JSONAdapter` therefore sends a signature's full schema to it.

The engine holds its backend, model and load options (`dump_state()`; pickles without the
weights, which load again on first use), and, for `model=auto`, why that backend was chosen.
Weights are loaded once per process per (backend, model, options): runner.lm.backends.base.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from runner.lm.backends.base import BACKENDS, GenParams, Model, load_model
from runner.lm.constrain import schema_of


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


@dataclass
class Generation:
    """Running state of one call, filled while streaming."""

    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    first_token_s: float | None = None


def params_of(config) -> GenParams:
    """GenParams from a dspy.lm15 `Config`."""
    return GenParams(
        temperature=float(config.temperature) if config.temperature is not None else 0.0,
        max_tokens=int(config.max_tokens) if config.max_tokens else GenParams.max_tokens,
        stop=[s for s in config.stop if s],
        top_p=float(config.top_p) if config.top_p is not None else 1.0,
        seed=config.seed,
        schema=schema_of(config.response_format),
    )


def _unsupported(message: str):
    from dspy.lm15 import UnsupportedFeatureError

    return UnsupportedFeatureError(message)


def chat_messages(request, backend: str) -> list[dict]:
    """The request's system prompt and messages as role/content dicts (what chat templates read)."""
    from dspy.lm15 import TextPart

    out = []
    if request.system is not None:
        system = request.system if isinstance(request.system, str) else "".join(
            p.text for p in request.system if isinstance(p, TextPart))
        out.append({"role": "system", "content": system})
    for message in request.messages:
        text = message.text
        if text is None:
            kinds = sorted({type(p).__name__ for p in message.parts})
            raise _unsupported(f"{backend}: a local text model takes text messages only, got {kinds}")
        out.append({"role": message.role, "content": text})
    return out


class LocalEngine:
    """A DSPy engine running `backend/model` in this process."""

    supports_response_schema = True
    supports_function_calling = False
    supports_reasoning = False
    supported_params = frozenset({"temperature", "max_tokens", "top_p", "stop", "seed", "response_format", "stream"})

    def __init__(self, backend: str, model: str = "embedded", options: dict | None = None,
                 selection: dict | None = None):
        if backend not in BACKENDS:
            raise ValueError(f"unknown local backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.backend = backend
        self.model_name = model
        self.options = {k: v for k, v in (options or {}).items() if v is not None}
        self.selection = selection  # model=auto: {"backend", "reason", "hardware"}
        self._model: Model | None = None

    @property
    def model(self) -> Model:
        """The loaded model (loaded on first use, shared with engines of the same spec)."""
        if self._model is None:
            self._model = self._load()
        return self._model

    def _load(self) -> Model:
        return load_model(self.backend, self.model_name, self.options)

    # -- generation --------------------------------------------------------------------------
    def generate(self, messages: list[dict], params: GenParams, state: Generation) -> Iterator[str]:
        """Yield output text pieces (one per token, stop strings removed); fill `state`."""
        from dspy.lm15 import ContextLengthError

        model = self.model
        prompt = model.render(messages)
        start = time.perf_counter()
        with model.lock:
            state.prompt_tokens = model.count_tokens(prompt)
            if model.n_ctx:
                room = model.n_ctx - state.prompt_tokens
                if room <= 0:
                    raise ContextLengthError(
                        f"{self.backend}: the prompt has {state.prompt_tokens} tokens, more than the context window "
                        f"({model.n_ctx}); raise n_ctx in the model's backend options or shorten the prompt",
                        provider=self.backend)
                params.max_tokens = min(params.max_tokens, room)
            stopper = StopFilter(params.stop)
            state.finish_reason = "stop"
            for piece in model.stream(prompt, params):
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

    def _prepare(self, request) -> tuple[list[dict], GenParams]:
        from dspy.clients.engines.base import validate_request

        validate_request(request)
        if request.tools:
            raise _unsupported(f"{self.backend}: local engines do not call tools")
        if request.config.logprobs is not None:
            raise _unsupported(f"{self.backend}: local engines do not return logprobs")
        return chat_messages(request, self.backend), params_of(request.config)

    def _usage(self, state: Generation):
        from dspy.lm15 import Usage

        return Usage(input_tokens=state.prompt_tokens, output_tokens=state.completion_tokens)

    def complete(self, request):
        from dspy.lm15 import Message, Response, TextPart

        messages, params = self._prepare(request)
        state = Generation()
        for _ in self.generate(messages, params, state):
            pass
        return Response(id=None, model=request.model, message=Message.assistant([TextPart(state.text)]),
                        finish_reason=state.finish_reason, usage=self._usage(state))

    def stream(self, request) -> Iterator:
        from dspy.lm15 import StreamDeltaEvent, StreamEndEvent, StreamStartEvent, TextDelta

        messages, params = self._prepare(request)
        state = Generation()
        yield StreamStartEvent(model=request.model)
        for piece in self.generate(messages, params, state):
            yield StreamDeltaEvent(delta=TextDelta(text=piece))
        yield StreamEndEvent(finish_reason=state.finish_reason, usage=self._usage(state))

    def close(self) -> None:
        """Nothing to release: the loaded weights stay shared with other engines of this spec."""

    # -- saving: the spec, never the weights ----------------------------------------------------
    def dump_state(self) -> dict:
        return {"backend": self.backend, "model": self.model_name, "options": dict(self.options)}

    @classmethod
    def load_state(cls, state: dict) -> LocalEngine:
        return cls(state["backend"], state.get("model", "embedded"), state.get("options"))

    def __getstate__(self) -> dict:
        return {**self.dump_state(), "selection": self.selection}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["backend"], state["model"], state["options"], state.get("selection"))

    def __repr__(self) -> str:
        return f"LocalEngine({self.backend}/{self.model_name}, options={self.options})"


class AsyncLocalEngine:
    """The async side of a LocalEngine (DSPy asks for one when a program runs with `acall`):
    generation runs in a worker thread, streamed tokens are handed over as they appear."""

    def __init__(self, engine: LocalEngine):
        self.engine = engine

    async def complete(self, request):
        return await asyncio.to_thread(self.engine.complete, request)

    async def stream(self, request) -> AsyncIterator:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        done = object()
        cancelled = threading.Event()

        def produce() -> None:
            try:
                for event in self.engine.stream(request):
                    if cancelled.is_set():
                        break
                    loop.call_soon_threadsafe(queue.put_nowait, event)
            except BaseException as exc:  # re-raised in the consumer
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, done)

        threading.Thread(target=produce, name=f"{self.engine.backend}-stream", daemon=True).start()
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

    async def aclose(self) -> None:
        self.engine.close()

    def dump_state(self) -> dict:
        return self.engine.dump_state()

    @classmethod
    def load_state(cls, state: dict) -> AsyncLocalEngine:
        return cls(LocalEngine.load_state(state))


def local_lm(model: str, engine: LocalEngine | None = None, **kwargs: Any):
    """A `dspy.LM` named `model` (`backend/name`) running on a LocalEngine."""
    import dspy

    backend, _, name = model.partition("/")
    engine = engine or LocalEngine(backend, name or "embedded")
    # Retrying a local model repeats the same failure; DSPy would only add delay.
    kwargs.setdefault("num_retries", 0)
    return dspy.LM(model, engine=engine, async_engine=AsyncLocalEngine(engine), **kwargs)
