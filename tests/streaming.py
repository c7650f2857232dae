"""A token-streaming test LM: a LocalEngine (the engine of llamacpp/ mlx/ torch/) whose model
replays a fixed ChatAdapter reply piece by piece with a short delay. It exercises the real path
engine stream -> dspy.streamify -> StreamListener -> SSE without loading a model.
"""

from __future__ import annotations

import threading
import time

import dspy

from runner.lm.engine import LocalEngine, local_lm

REASONING = ["[[ ## reasoning ## ]]\n", "Add ", "them.", "\n\n"]
ANSWER = ["[[ ## answer ## ]]\n", "12", "34", ".5", "\n\n[[ ## completed ## ]]"]
DELAY_S = 0.05


class ScriptedModel:
    n_ctx = 4000  # "tokens" are words here: a longer prompt overflows it

    def __init__(self):
        self.lock = threading.Lock()

    def render(self, messages):
        return "\n".join(str(m.get("content", "")) for m in messages)

    def count_tokens(self, prompt):
        return len(prompt.split())

    def stream(self, prompt, params):
        delay = 10 * DELAY_S if "SLOW" in prompt else DELAY_S  # lets tests trigger the server timeout
        # reasoning only when the signature asks for it (ChainOfThought), as a real model would; a
        # plain prompt (adapter=plain: no field headers) gets the bare answer
        if "[[ ## " not in prompt:
            pieces = ["12", "34", ".5"]
        else:
            pieces = (REASONING if "[[ ## reasoning ## ]]" in prompt else []) + ANSWER
        for piece in pieces:
            time.sleep(delay)
            yield piece

    def reset(self):
        pass


class ScriptedEngine(LocalEngine):
    """A LocalEngine whose model is the script above."""

    def __init__(self, *args, **kwargs):
        super().__init__("llamacpp", "scripted")

    def _load(self):
        return ScriptedModel()


def streaming_lm(**_ignored) -> dspy.LM:
    """`_target_` of tests/conf/model/streaming.yaml."""
    return local_lm("scriptedstream/scripted", ScriptedEngine(), cache=False, temperature=0.0, max_tokens=64)
