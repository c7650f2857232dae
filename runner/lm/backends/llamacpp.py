"""`llamacpp/<embedded|path.gguf>`: llama.cpp through llama-cpp-python, in process.

Generation drives `Llama.generate` token by token. That keeps the KV cache of the previous
call and re-evaluates only the tokens after the longest common prefix: DSPy prompts share a
long prefix (instructions, field descriptions, demos), so a warm call evaluates just the
question. `python -m runner.bench` measures the cold/warm ratio.

A JSON schema is enforced by llama.cpp's own grammar engine. Greedy decoding under a grammar
samples the way llama.cpp's own `common_sampler` does: the model's best token is checked against
the grammar alone, and only when the grammar rejects it is the grammar applied to the whole
vocabulary. That picks exactly the token full masking would (the best allowed one) and skips a
49k-candidate grammar pass on most steps. Sampling at a temperature goes through
`Llama.generate` with the grammar as a stage of its sampler chain, which keeps the distribution exact.
"""

from __future__ import annotations

import atexit
import codecs
import ctypes
import math
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path

from runner.errors import RunnerError
from runner.lm.backends.base import GenParams, common_prefix_len, render_chat_template
from runner.lm.constrain import llama_gbnf, schema_key
from runner.lm.embedded import resolve_model_path

_OPEN: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Free llama.cpp models before interpreter teardown (its __del__ fails noisily once modules are gone)."""
    for model in list(_OPEN):
        model.llm.close()


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


class LlamaCppModel:
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
        ids = self.tokens(prompt)
        gbnf = llama_gbnf(schema_key(params.schema)) if params.schema is not None else None
        if gbnf is not None and params.temperature <= 0:
            tokens = self._greedy_under_grammar(ids, gbnf, params.max_tokens)
        else:
            from llama_cpp import LlamaGrammar

            grammar = LlamaGrammar.from_string(gbnf, verbose=False) if gbnf is not None else None
            tokens = self.llm.generate(ids, temp=params.temperature, top_p=params.top_p, reset=True, grammar=grammar)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        vocab = self.llm._model.vocab
        produced = 0
        for token in tokens:
            if self._eog(vocab, token) or produced >= params.max_tokens:
                return
            produced += 1
            yield decoder.decode(self.llm.detokenize([token]))
            if produced >= params.max_tokens:
                return

    def _prefill(self, ids: list[int]) -> None:
        """Evaluate `ids`, keeping the KV cache of the longest prefix the last call left there."""
        import llama_cpp

        llm = self.llm
        keep = min(common_prefix_len(llm.input_ids[: llm.n_tokens].tolist(), ids), len(ids) - 1)
        if keep < llm.n_tokens and not llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(llm.ctx), -1, keep, -1):
            llm.reset()  # a model whose cache cannot be cut (recurrent): start over
            keep = 0
        llm.n_tokens = keep
        llm.eval(ids[keep:])

    def _greedy_under_grammar(self, ids: list[int], gbnf: str, max_tokens: int) -> Iterator[int]:
        """Greedy tokens under a GBNF grammar (see the module docstring)."""
        import llama_cpp
        import numpy as np

        llm = self.llm
        n_vocab = llm.n_vocab()
        sampler = llama_cpp.llama_sampler_init_grammar(llm._model.vocab, gbnf.encode("utf-8"), b"root")
        if not sampler:
            raise ValueError("llama.cpp could not parse the grammar of this response_format schema")
        best = (llama_cpp.llama_token_data * 1)()
        best_view = llama_cpp.llama_token_data_array(data=best, size=1, selected=-1, sorted=False)
        every = np.zeros(n_vocab, dtype=np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")]))
        every["id"] = np.arange(n_vocab, dtype=np.int32)
        every_view = llama_cpp.llama_token_data_array(
            data=every.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data)), size=n_vocab, selected=-1,
            sorted=False)
        try:
            self._prefill(ids)
            for _ in range(max_tokens):
                logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
                token = int(np.argmax(logits))
                best[0].id, best[0].logit, best[0].p = token, float(logits[token]), 0.0
                best_view.size, best_view.selected = 1, -1
                llama_cpp.llama_sampler_apply(sampler, ctypes.byref(best_view))
                if best[0].logit == -math.inf:  # the grammar rejects the model's first choice
                    every["logit"] = logits
                    every_view.size, every_view.selected, every_view.sorted = n_vocab, -1, False
                    llama_cpp.llama_sampler_apply(sampler, ctypes.byref(every_view))
                    token = int(np.argmax(every["logit"]))
                    if every["logit"][token] == -math.inf:
                        raise RuntimeError("constrained decoding: the grammar allows no next token")
                yield token
                llama_cpp.llama_sampler_accept(sampler, token)
                llm.eval([token])
        finally:
            llama_cpp.llama_sampler_free(sampler)

    def reset(self) -> None:
        """Drop the KV cache (the next call is cold); used by the benchmark."""
        self.llm.reset()  # n_tokens = 0: generate() finds no prefix and re-evaluates everything

    def set_threads(self, n: int) -> None:
        """Change the decode/prefill thread count in place; the benchmark's compute-vs-memory check."""
        import llama_cpp

        llama_cpp.llama_set_n_threads(self.llm._ctx.ctx, int(n), int(n))
        self.n_threads = int(n)


def load(model: str, options: dict) -> LlamaCppModel:
    return LlamaCppModel(resolve_model_path(model, "llamacpp"), options)
