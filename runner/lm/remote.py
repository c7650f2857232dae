"""Remote LMs: what the runner declares about an endpoint that DSPy cannot know."""

from __future__ import annotations

import dspy


class SchemaEnforcingLM(dspy.LM):
    """A remote LM whose endpoint enforces the JSON schema of `response_format` (vLLM, llama.cpp's
    llama-server, Ollama, SGLang, LM Studio). DSPy asks the LM whether it does
    (`supports_response_schema`, `supported_params`); its capability tables know hosted models, not
    a model name on your own server, so this LM answers for it (conf/model/server.yaml)."""

    @property
    def supports_response_schema(self) -> bool:
        return True

    @property
    def supported_params(self) -> set[str]:
        return set(super().supported_params) | {"response_format"}
