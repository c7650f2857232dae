"""A token-streaming test LM: a LiteLLM custom provider (`scriptedstream/`) built on the same
runner.lm.providers.base.LocalProvider generation loop as llamacpp/ mlx/ torch/, whose engine
replays a fixed ChatAdapter reply piece by piece with a short delay. It exercises the real path
LiteLLM streaming -> dspy.streamify -> StreamListener -> SSE without loading a model.
"""

from __future__ import annotations

import threading
import time

import dspy

from runner.lm.providers.base import LocalProvider

REASONING = ["[[ ## reasoning ## ]]\n", "Add ", "them.", "\n\n"]
ANSWER = ["[[ ## answer ## ]]\n", "12", "34", ".5", "\n\n[[ ## completed ## ]]"]
DELAY_S = 0.05


class ScriptedEngine:
    n_ctx = None

    def __init__(self):
        self.lock = threading.Lock()

    def render(self, messages):
        return "\n".join(str(m.get("content", "")) for m in messages)

    def count_tokens(self, prompt):
        return len(prompt.split())

    def stream(self, prompt, params):
        delay = 10 * DELAY_S if "SLOW" in prompt else DELAY_S  # lets tests trigger the server timeout
        # reasoning only when the signature asks for it (ChainOfThought), as a real model would
        pieces = (REASONING if "[[ ## reasoning ## ]]" in prompt else []) + ANSWER
        for piece in pieces:
            time.sleep(delay)
            yield piece


class ScriptedStreamProvider(LocalProvider):
    backend = "scriptedstream"

    def load(self, model, options):
        return ScriptedEngine()


def streaming_lm(**_ignored) -> dspy.LM:
    """`_target_` of tests/conf/model/streaming.yaml."""
    import litellm

    providers = [p for p in (litellm.custom_provider_map or []) if p.get("provider") != "scriptedstream"]
    litellm.custom_provider_map = [*providers, {"provider": "scriptedstream", "custom_handler": ScriptedStreamProvider()}]
    litellm.utils.custom_llm_setup()
    return dspy.LM("scriptedstream/scripted", cache=False, num_retries=0, temperature=0.0, max_tokens=64)
