"""LiteLLM custom providers for in-process local models: `llamacpp/`, `mlx/`, `torch/`.

After `register()`, `dspy.LM("llamacpp/embedded")` (or `mlx/...`, `torch/...`, with a path to
a .gguf / mlx-lm folder / HF folder instead of `embedded`) runs the model inside this process.
Backend libraries are imported only when a model is first loaded.
"""

from __future__ import annotations

from runner.lm.providers.base import cached_engines, clear_engines, configure, options_for

BACKENDS = ("llamacpp", "mlx", "torch")

__all__ = ["BACKENDS", "cached_engines", "clear_engines", "configure", "handler", "options_for", "register"]

_HANDLERS: dict = {}


def handler(backend: str):
    """The (single) provider instance for `backend`."""
    if backend not in _HANDLERS:
        if backend == "llamacpp":
            from runner.lm.providers.llamacpp import LlamaCppProvider as cls
        elif backend == "mlx":
            from runner.lm.providers.mlx import MlxProvider as cls
        elif backend == "torch":
            from runner.lm.providers.torch import TorchProvider as cls
        else:
            raise ValueError(f"unknown local backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        _HANDLERS[backend] = cls()
    return _HANDLERS[backend]


def register() -> None:
    """Add the three providers to `litellm.custom_provider_map`, keeping entries already there.

    Idempotent: calling it again (or after someone else registered other providers) changes nothing.
    """
    import litellm

    current = list(litellm.custom_provider_map or [])
    present = {entry.get("provider") for entry in current}
    for backend in BACKENDS:
        if backend not in present:
            current.append({"provider": backend, "custom_handler": handler(backend)})
    litellm.custom_provider_map = current
    litellm.utils.custom_llm_setup()  # what litellm does on its own at import; needed for later additions
