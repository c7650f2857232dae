"""`llamacpp/<embedded|path.gguf>`: llama.cpp through llama-cpp-python, in process.

Generation drives `Llama.generate` token by token. That keeps the KV cache of the previous
call and re-evaluates only the tokens after the longest common prefix: DSPy prompts share a
long prefix (instructions, field descriptions, demos), so a warm call evaluates just the
question. `python -m runner.bench` measures the cold/warm ratio.
"""

from __future__ import annotations

import atexit
import codecs
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path

from runner.lm.embedded import resolve_model_path
from runner.errors import RunnerError
from runner.lm.providers.base import GenParams, LocalProvider, render_chat_template

_OPEN: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Free llama.cpp models before interpreter teardown (its __del__ fails noisily once modules are gone)."""
    for engine in list(_OPEN):
        engine.llm.close()


DEFAULTS = {"n_ctx": 4096, "n_batch": 512, "n_threads": None, "n_gpu_layers": -1}


def import_llama_cpp():
    """llama_cpp, or RunnerError with the install command (it compiles llama.cpp)."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise RunnerError(
            f"the llamacpp backend needs llama-cpp-python ({exc})",
            "pip install llama-cpp-python (on x86 set CMAKE_ARGS='-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON "
            "-DGGML_F16C=ON'; `make setup` does it)",
        ) from exc
    return llama_cpp


def default_threads() -> int:
    """Physical cores: llama.cpp decode is memory bound, hyper-threads only add contention."""
    from runner.lm.hardware import cpu

    return max(1, min(cpu()["physical_cores"], cpu()["usable_cores"]))


class LlamaCppEngine:
    """One loaded GGUF model and its KV cache; `lock` serializes calls from several threads."""

    def __init__(self, path: Path, options: dict):
        llama_cpp = import_llama_cpp()
        opts = {**DEFAULTS, **options}
        if path.suffix != ".gguf" or not path.is_file():
            raise RunnerError(f"llamacpp needs a .gguf file, got {str(path)!r}", "pass `embedded` or a path to a .gguf file")
        self.path = path
        self.lock = threading.Lock()
        self._eog = llama_cpp.llama_vocab_is_eog
        extra = {k: v for k, v in opts.items() if k not in DEFAULTS}
        self.n_threads = int(opts["n_threads"] or default_threads())
        self.llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=int(opts["n_ctx"]),
            n_batch=int(opts["n_batch"]),
            n_threads=self.n_threads,
            n_threads_batch=self.n_threads,
            n_gpu_layers=int(opts["n_gpu_layers"]),
            verbose=bool(extra.pop("verbose", False)),
            **extra,
        )
        self.n_ctx = self.llm.n_ctx()
        _OPEN.add(self)
        model = self.llm._model
        self.template = self.llm.metadata.get("tokenizer.chat_template")
        self.bos = model.token_get_text(model.token_bos()) if model.token_bos() >= 0 else ""
        self.eos = model.token_get_text(model.token_eos()) if model.token_eos() >= 0 else ""

    def render(self, messages: list[dict]) -> str:
        if not self.template:
            raise RunnerError(f"{self.path.name} has no chat template in its GGUF metadata", "use an instruct/chat GGUF")
        return render_chat_template(self.template, messages, self.bos, self.eos)

    def tokens(self, prompt: str) -> list[int]:
        add_bos = not (self.bos and prompt.startswith(self.bos))  # the template may already write it
        return self.llm.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True)

    def count_tokens(self, prompt: str) -> int:
        return len(self.tokens(prompt))

    def stream(self, prompt: str, params: GenParams) -> Iterator[str]:
        if params.seed is not None:
            self.llm.set_seed(int(params.seed))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        vocab = self.llm._model.vocab
        produced = 0
        for token in self.llm.generate(self.tokens(prompt), temp=params.temperature, top_p=params.top_p, reset=True):
            if self._eog(vocab, token) or produced >= params.max_tokens:
                return
            produced += 1
            yield decoder.decode(self.llm.detokenize([token]))
            if produced >= params.max_tokens:
                return

    def reset(self) -> None:
        """Drop the KV cache (the next call is cold); used by the benchmark."""
        self.llm.reset()  # n_tokens = 0: generate() finds no prefix and re-evaluates everything

    def set_threads(self, n: int) -> None:
        """Change the decode/prefill thread count in place; the benchmark's compute-vs-memory check."""
        import llama_cpp

        llama_cpp.llama_set_n_threads(self.llm._ctx.ctx, int(n), int(n))
        self.n_threads = int(n)


class LlamaCppProvider(LocalProvider):
    backend = "llamacpp"

    def load(self, model: str, options: dict) -> LlamaCppEngine:
        return LlamaCppEngine(resolve_model_path(model), options)

