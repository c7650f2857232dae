"""`mlx/<embedded|path>`: mlx-lm in process (Metal on Apple Silicon, mlx[cpu] elsewhere).

`embedded` (or any .gguf path) is converted once into an mlx-lm folder under the cache dir
(runner.lm.gguf_to_mlx) and loaded from there afterwards. Like llama.cpp, the KV cache of the last
call is kept and trimmed back to the common prefix, so a warm DSPy call only evaluates its tail.
A JSON schema is enforced by an mlx-lm logits processor fed by llguidance (runner.lm.constrain).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

from runner.errors import RunnerError
from runner.lm.backends.base import GenParams, HFTokenizerChat, common_prefix_len
from runner.lm.constrain import JsonConstraint, llguidance_tokenizer
from runner.lm.embedded import resolve_model_path


def default_cache_dir() -> Path:
    """$DSPY_RUNNER_CACHE/mlx, else outputs/cache/mlx (the same place conf/paths uses)."""
    root = os.environ.get("DSPY_RUNNER_CACHE")
    return Path(root) / "mlx" if root else Path("outputs") / "cache" / "mlx"


def import_mlx_lm():
    try:
        import mlx.core  # noqa: F401
        import mlx_lm
    except ImportError as exc:
        raise RunnerError(
            f"the mlx backend needs mlx and mlx-lm ({exc})",
            "pip install mlx-lm 'mlx[cpu]' (Linux) or pip install mlx-lm (macOS)",
        ) from exc
    return mlx_lm


def model_folder(path: Path, options: dict) -> Path:
    """An mlx-lm model folder for `path`: converted from GGUF (cached) or used as is."""
    if path.is_file() and path.suffix == ".gguf":
        from runner.lm.gguf_to_mlx import ensure_converted

        return ensure_converted(path, Path(options.get("cache_dir") or default_cache_dir()))
    if path.is_dir() and (path / "config.json").is_file():
        return path
    raise RunnerError(f"mlx needs a .gguf file or an mlx-lm model folder, got {str(path)!r}",
                      "pass `embedded`, a .gguf path or a folder with config.json + safetensors")


class SchemaLogitsProcessor:
    """An mlx-lm logits processor that keeps the output valid under a JSON schema.

    mlx-lm calls it once per step with every token so far (the prompt's first); each new token is
    fed to the matcher, then every logit the schema does not allow becomes -inf."""

    def __init__(self, constraint: JsonConstraint):
        self.constraint = constraint
        self.seen: int | None = None

    def __call__(self, tokens, logits):
        import mlx.core as mx

        n = int(tokens.shape[0])
        if self.seen is not None:
            for token in tokens[self.seen:].tolist():
                self.constraint.advance(token)
        self.seen = n
        return mx.where(mx.array(self.constraint.allowed(int(logits.shape[-1]))), logits, -mx.inf)


class MlxModel(HFTokenizerChat):
    def __init__(self, folder: Path, options: dict):
        mlx_lm = import_mlx_lm()
        from mlx_lm.models.cache import make_prompt_cache

        self.folder = folder
        self.model, self.tokenizer = mlx_lm.load(str(folder))
        self.lock = threading.Lock()
        self.n_ctx = options.get("n_ctx")
        self._make_cache = lambda: make_prompt_cache(self.model)
        self.kv = None
        self.kv_tokens: list[int] = []  # the tokens whose keys/values `kv` holds
        self._llg = None  # llguidance tokenizer, built on the first constrained call

    def _reuse_prefix(self, ids: list[int]) -> list[int]:
        """Trim the kept KV cache to the common prefix with `ids`; return the tokens still to evaluate."""
        from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

        common = common_prefix_len(self.kv_tokens, ids)
        common = min(common, len(ids) - 1)  # at least one token must be evaluated to get logits
        if self.kv is None or common <= 0 or not can_trim_prompt_cache(self.kv):
            self.kv, self.kv_tokens = self._make_cache(), []
            return ids
        trim_prompt_cache(self.kv, self.kv[0].offset - common)
        self.kv_tokens = self.kv_tokens[:common]
        return ids[common:]

    def _processors(self, params: GenParams) -> list:
        if params.schema is None:
            return []
        if self._llg is None:
            self._llg = llguidance_tokenizer(self.tokenizer, self.tokenizer.eos_token_ids)
        return [SchemaLogitsProcessor(JsonConstraint(self._llg, params.schema))]

    def stream(self, prompt: str, params: GenParams) -> Iterator[str]:
        import mlx.core as mx
        from mlx_lm import stream_generate
        from mlx_lm.sample_utils import make_sampler

        if params.seed is not None:
            mx.random.seed(int(params.seed))
        ids = self.tokens(prompt)
        todo = self._reuse_prefix(ids)
        done = list(ids[: len(ids) - len(todo)])
        generated: list[int] = []
        sampler = make_sampler(temp=params.temperature, top_p=params.top_p if params.top_p < 1.0 else 0.0)
        try:
            for response in stream_generate(self.model, self.tokenizer, todo, max_tokens=params.max_tokens,
                                            sampler=sampler, prompt_cache=self.kv,
                                            logits_processors=self._processors(params)):
                if response.finish_reason == "stop" and response.token in self.tokenizer.eos_token_ids:
                    if response.text:  # the detokenizer's last flush, never the EOS text itself
                        yield response.text
                    return
                generated.append(response.token)
                yield response.text
        finally:
            # mlx-lm evaluates one token ahead, so the cache may hold a token nobody saw (or EOS):
            # cut it back to what we know, or the next call's prefix would be misaligned.
            from mlx_lm.models.cache import trim_prompt_cache

            known = done + todo + generated
            offset = self.kv[0].offset if self.kv else 0
            if offset > len(known):
                trim_prompt_cache(self.kv, offset - len(known))
            self.kv_tokens = known[: min(offset, len(known))]

    def reset(self) -> None:
        """Drop the KV cache (the next call is cold); used by the benchmark."""
        self.kv, self.kv_tokens = None, []


def load(model: str, options: dict) -> MlxModel:
    return MlxModel(model_folder(resolve_model_path(model, "mlx"), options), options)
