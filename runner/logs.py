"""Logging defaults shared by the runner's entrypoints."""

from __future__ import annotations

import logging


def quiet_libraries() -> None:
    """LiteLLM logs every call at INFO under Hydra's INFO root logger; keep warnings only."""
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
