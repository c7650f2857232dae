"""`torch/<embedded|HF folder|file.gguf>`: PyTorch + transformers in process (CUDA, MPS or CPU).

Optional extra (`pip install -e '.[torch]'`): nothing here imports torch until a model is
loaded. transformers reads a GGUF directly (dequantized to the chosen dtype). The decode loop
is written out so every token is streamed as it is produced and the KV cache of the previous
call is cropped back to the common prefix, as the other backends do. A JSON schema is enforced
in the same loop: llguidance's mask (runner.lm.constrain) sets disallowed logits to -inf
before sampling.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterator
from pathlib import Path

from runner.errors import RunnerError
from runner.lm.backends.base import GenParams, HFTokenizerChat, common_prefix_len
from runner.lm.constrain import JsonConstraint, llguidance_tokenizer
from runner.lm.embedded import resolve_model_path


def import_torch():
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise RunnerError(f"the torch backend needs torch and transformers ({exc})",
                          "pip install -e '.[torch]'") from exc
    return torch, transformers


def pick_device(torch, wanted: str = "auto") -> str:
    if wanted and wanted != "auto":
        return wanted
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(torch, device: str, wanted: str = "auto"):
    if wanted and wanted != "auto":
        return getattr(torch, wanted)
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.float16
    return torch.float32  # CPU half-precision matmuls are slow or missing


class TorchModel(HFTokenizerChat):
    def __init__(self, path: Path, options: dict):
        torch, transformers = import_torch()
        self.torch = torch
        self.device = pick_device(torch, options.get("device", "auto"))
        dtype = pick_dtype(torch, self.device, options.get("dtype", "auto"))
        if path.is_file() and path.suffix == ".gguf":
            folder, extra = str(path.parent), {"gguf_file": path.name}
        elif path.is_dir():
            folder, extra = str(path), {}
        else:
            raise RunnerError(f"torch needs a .gguf file or a Hugging Face model folder, got {str(path)!r}",
                              "pass `embedded`, a .gguf path or a folder with config.json")
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(folder, **extra)
        self.model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **extra)
        self.model.to(self.device).eval()
        self.lock = threading.Lock()
        self.n_ctx = options.get("n_ctx") or getattr(self.model.config, "max_position_embeddings", None)
        eos = self.model.generation_config.eos_token_id if self.model.generation_config else None
        eos = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {t for t in [*eos, self.tokenizer.eos_token_id] if t is not None}
        self.kv = None
        self.kv_tokens: list[int] = []
        # transformers >= 5.x renamed `past_key_values` to `cache`; use whichever forward() takes.
        params = inspect.signature(self.model.forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"
        self._llg = None  # llguidance tokenizer, built on the first constrained call

    def _constraint(self, params: GenParams) -> JsonConstraint | None:
        if params.schema is None:
            return None
        if self._llg is None:
            self._llg = llguidance_tokenizer(self.tokenizer, self.eos_ids)
        return JsonConstraint(self._llg, params.schema)

    def _reuse_prefix(self, ids: list[int]) -> list[int]:
        common = common_prefix_len(self.kv_tokens, ids)
        common = min(common, len(ids) - 1)
        if self.kv is None or common <= 0 or not hasattr(self.kv, "crop"):
            self.kv, self.kv_tokens = None, []
            return ids
        extra = self.kv.get_seq_length() - common
        if extra > 0:
            self.kv.crop(-extra)  # negative = drop that many tokens (transformers 4.x and 5.x)
        self.kv_tokens = self.kv_tokens[:common]
        return ids[common:]

    def _sample(self, logits, params: GenParams) -> int:
        torch = self.torch
        if params.temperature <= 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits.float() / params.temperature, dim=-1)
        if params.top_p < 1.0:
            sorted_p, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < params.top_p
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
        return int(torch.multinomial(probs / probs.sum(), 1))

    def stream(self, prompt: str, params: GenParams) -> Iterator[str]:
        torch = self.torch
        if params.seed is not None:
            torch.manual_seed(int(params.seed))
        ids = self.tokens(prompt)
        todo = self._reuse_prefix(ids)
        done = ids[: len(ids) - len(todo)]
        generated: list[int] = []
        text = ""
        constraint = self._constraint(params)
        try:
            with torch.inference_mode():
                step = todo
                for _ in range(params.max_tokens):
                    out = self.model(input_ids=torch.tensor([step], device=self.device),
                                     use_cache=True, **{self.cache_kw: self.kv})
                    self.kv = getattr(out, "cache", None) or out.past_key_values
                    logits = out.logits[0, -1]
                    if constraint is not None:
                        allowed = torch.from_numpy(constraint.allowed(int(logits.shape[-1]))).to(logits.device)
                        logits = logits.masked_fill(~allowed, float("-inf"))
                    token = self._sample(logits, params)
                    if token in self.eos_ids:
                        return
                    if constraint is not None:
                        constraint.advance(token)
                    generated.append(token)
                    step = [token]
                    full = self.tokenizer.decode(generated, skip_special_tokens=True)
                    if full.endswith("\ufffd"):  # incomplete multi-byte character: wait for the next token
                        yield ""
                        continue
                    yield full[len(text):]
                    text = full
        finally:
            seen = self.kv.get_seq_length() if self.kv is not None else 0
            self.kv_tokens = (done + todo + generated)[:seen]

    def reset(self) -> None:
        self.kv, self.kv_tokens = None, []


def load(model: str, options: dict) -> TorchModel:
    return TorchModel(resolve_model_path(model, "torch"), options)
