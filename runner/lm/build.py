"""Build the `dspy.LM` of a run (Hydra `_target_`s of conf/model/*.yaml).

`build_lm` takes any LiteLLM model string; `llamacpp/`, `mlx/` and `torch/` models run in this
process on a LocalEngine (runner.lm.engine). `auto_lm` looks at the hardware and picks the local
backend; the engine records the choice and why (`lm.engine.selection`), so the run can log it.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

from runner.errors import RunnerError

LOCAL_BACKENDS = ("llamacpp", "mlx", "torch")

_INSTALL_HINTS = {
    "llamacpp": "pip install llama-cpp-python (x86: CMAKE_ARGS='-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON "
    "-DGGML_F16C=ON'; `make setup` does it)",
    "mlx": "pip install mlx-lm 'mlx[cpu]' (Linux) or mlx-lm (macOS)",
    "torch": "pip install -e '.[torch]' (torch + transformers)",
}

def _plain(value: Any) -> Any:
    """OmegaConf containers (what Hydra passes) -> plain dicts/lists."""
    if value is None:
        return None
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:
        pass
    return value


def backend_available(backend: str) -> bool:
    """Whether the libraries of a local backend are installed (checked without importing them)."""
    modules = {"llamacpp": ["llama_cpp"], "mlx": ["mlx", "mlx_lm"], "torch": ["torch", "transformers"]}[backend]
    return all(importlib.util.find_spec(m) is not None for m in modules)


def require_backend(backend: str) -> None:
    if not backend_available(backend):
        raise RunnerError(f"the {backend} backend is not installed", _INSTALL_HINTS[backend])


def check_endpoint(api_base: str, timeout: float = 2.0) -> None:
    """Fail fast with a hint when an OpenAI-compatible server is not listening."""
    from runner.endpoints import check_endpoint as check

    check(api_base, "the LM endpoint",
          "start the server (vLLM, llama-server, LM Studio, ollama) or fix model.api_base", timeout)


def build_lm(
    model: str,
    temperature: float = 0.0,
    max_tokens: int = 384,
    cache: bool = True,
    backend: dict | None = None,
    api_base: str | None = None,
    api_key: str | None = None,
    num_retries: int | None = None,
    selection: dict | None = None,
    response_schema: bool = False,
    **kwargs: Any,
):
    """A `dspy.LM` for `model`.

    `llamacpp/<embedded|file.gguf>`, `mlx/<embedded|mlx-lm folder>`, `torch/<embedded|HF folder|file.gguf>`
    run in process on a LocalEngine; `backend` holds their load options (n_ctx, n_threads, n_batch /
    cache_dir / device, dtype) and `selection` why `model=auto` chose it. Anything else is handed
    to DSPy/LiteLLM as is (openai/..., ollama_chat/...); `response_schema=True` declares that the
    endpoint enforces a JSON schema sent as `response_format` (conf/model/server.yaml).
    """
    import dspy

    prefix, _, name = model.partition("/")
    if prefix in LOCAL_BACKENDS:
        from runner.lm.embedded import resolve_model_path
        from runner.lm.engine import LocalEngine, local_lm

        require_backend(prefix)
        resolve_model_path(name, prefix)  # RunnerError (or the download) now, not inside the first LM call
        engine = LocalEngine(prefix, name, _plain(backend), selection=selection)
        return local_lm(model, engine, temperature=temperature, max_tokens=max_tokens, cache=cache,
                        num_retries=num_retries or 0, **kwargs)
    extra = {k: v for k, v in {"api_base": api_base, "api_key": api_key}.items() if v}
    if api_base:
        check_endpoint(api_base)
        # An OpenAI-compatible server (vLLM, llama.cpp, Ollama, ...): DSPy's LiteLLM engine sends
        # `max_tokens`, which these servers read; DSPy's native engine sends OpenAI's newer
        # `max_completion_tokens`, which llama-cpp-python's server ignores (it then generates unbounded).
        kwargs.setdefault("engine", "litellm")
    if response_schema:
        from runner.lm.remote import SchemaEnforcingLM as cls
    else:
        cls = dspy.LM
    return cls(model, temperature=temperature, max_tokens=max_tokens, cache=cache,
               num_retries=3 if num_retries is None else num_retries, **extra, **kwargs)


def choose_backend(hw: dict) -> tuple[str, str]:
    """(backend, reason) for this hardware: the fastest installed backend for the embedded model."""
    installed = {b: backend_available(b) for b in LOCAL_BACKENDS}
    apple, gpu, cpu = hw.get("apple_silicon") or {}, hw.get("cuda") or {}, hw.get("cpu") or {}
    if apple and installed["mlx"]:
        return "mlx", f"Apple Silicon ({apple.get('chip')}, {apple.get('gpu_cores')} GPU cores): MLX on Metal"
    if apple and installed["llamacpp"]:
        return "llamacpp", f"Apple Silicon ({apple.get('chip')}) without mlx-lm: llama.cpp on Metal"
    if gpu.get("available") and installed["torch"]:
        name = (gpu.get("devices") or [{}])[0].get("name", "GPU")
        return "torch", f"CUDA device ({name}): PyTorch on the GPU"
    simd = "+".join(f for f in ("avx512", "avx2", "fma", "f16c", "neon") if cpu.get(f)) or "no SIMD flags"
    if installed["llamacpp"]:
        return "llamacpp", f"CPU only ({cpu.get('physical_cores')} cores, {simd}): llama.cpp runs the Q4 GGUF fastest"
    if installed["mlx"]:
        return "mlx", f"CPU only ({simd}) and llama-cpp-python missing: mlx[cpu] fallback"
    if installed["torch"]:
        return "torch", "CPU only, llama-cpp-python and mlx-lm missing: PyTorch fallback"
    raise RunnerError("no local LM backend is installed", _INSTALL_HINTS["llamacpp"])


def auto_lm(
    model_name: str = "embedded",
    temperature: float = 0.0,
    max_tokens: int = 384,
    cache: bool = True,
    options: dict | None = None,
    **kwargs: Any,
):
    """The embedded (or given) model on the best backend for this machine. The LM's engine
    records the choice: `lm.engine.selection` = {"backend", "reason", "hardware"}.

    `options` maps a backend name to its load options, used only if that backend is chosen.
    """
    from runner.lm import hardware

    hw = hardware.detect()
    backend, reason = choose_backend(hw)
    _announce(backend, reason)
    options = _plain(options) or {}
    return build_lm(f"{backend}/{model_name}", temperature=temperature, max_tokens=max_tokens, cache=cache,
                    backend=options.get(backend), selection={"backend": backend, "reason": reason, "hardware": hw},
                    **kwargs)


def _announce(backend: str, reason: str) -> None:
    try:
        from rich.console import Console

        Console(stderr=True).print(f"[bold]model backend:[/bold] {backend} [dim]({reason})[/dim]")
    except ImportError:
        print(f"model backend: {backend} ({reason})", file=sys.stderr)
