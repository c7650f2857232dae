"""A loaded-model stand-in for LocalEngine tests: records the prompts and parameters it was given and
streams a fixed reply, one character per token."""

from __future__ import annotations

import json
import threading


class RecordingModel:
    n_ctx = None

    def __init__(self, reply: str):
        self.lock, self.reply, self.calls, self.prompts = threading.Lock(), reply, [], []

    def render(self, messages):
        return json.dumps(messages)

    def count_tokens(self, prompt):
        return len(prompt.split())

    def stream(self, prompt, params):
        self.calls.append(params)
        self.prompts.append(prompt)
        yield from self.reply

    def reset(self):
        pass


def recording_lm(reply: str, cache: bool = False):
    """(a dspy.LM on a LocalEngine whose model is a RecordingModel, that model)."""
    from runner.lm.engine import LocalEngine, local_lm

    model = RecordingModel(reply)
    engine = LocalEngine("llamacpp", "recording")
    engine._model = model
    return local_lm("llamacpp/recording", engine, cache=cache), model
