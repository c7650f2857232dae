"""Stream one output field of a chat-format reply as the LM writes it.

DSPy's StreamListener starts a field only at the exact text `[[ ## answer ## ]]`. The embedded
135M model often writes `[[## answer ## ]]`; the reply still parses (LenientChatAdapter reads
header variants), but the stock listener never starts and the client receives no tokens. This
listener finds headers with the adapter's own pattern in the text received so far, sends the
field's text as it arrives, and holds back only what could still turn into the next header.
JSON and XML adapters keep DSPy's own listener logic.
"""

from __future__ import annotations

import re

import dspy
from dspy.streaming import StreamListener, StreamResponse

from runner.adapters import HEADER, TRAILING_OPEN

# The tail of the buffer that may be the start of a header: `[`, `[[`, `[[ #`, `[[## answ`, ...
_PARTIAL_HEADER = re.compile(r"\[(\[([ \t]*#*([ \t]*\w*([ \t]*#*([ \t]*\]?)?)?)?)?)?$")


def _stock_listener_handles(adapter) -> bool:
    return isinstance(adapter, (dspy.JSONAdapter, dspy.XMLAdapter))


class LenientStreamListener(StreamListener):
    """A StreamListener for ChatAdapter-style replies whose headers may be written loosely."""

    def __init__(self, signature_field_name: str, **kwargs):
        super().__init__(signature_field_name, **kwargs)
        self._text = ""
        self._sent = 0  # index in _text up to which the field value has been consumed
        # A subclass of JSONAdapter / XMLAdapter reuses its parent's identifiers in DSPy's own
        # listener logic, which looks them up by exact class name.
        adapter = dspy.settings.adapter
        if adapter is not None:
            for cls in type(adapter).__mro__:
                if cls.__name__ in self.adapter_identifiers:
                    self.adapter_identifiers[type(adapter).__name__] = self.adapter_identifiers[cls.__name__]
                    break

    def _reset(self) -> None:
        self._text, self._sent = "", 0
        self.stream_start = self.stream_end = self.cache_hit = self.value_started = False
        self.held_whitespace = ""

    def receive(self, chunk):
        if _stock_listener_handles(dspy.settings.adapter):
            return super().receive(chunk)
        if self.stream_end:
            if not self.allow_reuse:
                return None
            self._reset()
        try:
            piece = chunk.choices[0].delta.content
        except (AttributeError, IndexError):
            return None
        if not piece:
            return None
        self._text += piece
        if not self.stream_start:
            start = next((m for m in HEADER.finditer(self._text) if m.group(1) == self.signature_field_name), None)
            if start is None:
                return None
            self.stream_start, self._sent = True, start.end()
        rest = self._text[self._sent:]
        following = HEADER.search(rest)
        if following:
            value, self.stream_end = rest[: following.start()], True
        else:
            partial = _PARTIAL_HEADER.search(rest)
            value = rest[: partial.start()] if partial else rest
        self._sent += len(value)
        return self._emit(value)

    def _emit(self, value: str) -> StreamResponse | None:
        """Send `value` with the field's surrounding whitespace removed, as the parsed value has it."""
        if not self.value_started:
            value = value.lstrip()
        stripped = value.rstrip()
        token = ""
        if stripped:
            self.value_started = True
            token, self.held_whitespace = self.held_whitespace + stripped, value[len(stripped):]
        else:
            self.held_whitespace += value
        if token or self.stream_end:
            return StreamResponse(self.predict_name, self.signature_field_name, token, is_last_chunk=self.stream_end)
        return None

    def finalize(self) -> StreamResponse | None:
        """At the end of the LM stream, send what was held back (a `[` that never became a header)."""
        if _stock_listener_handles(dspy.settings.adapter):
            return super().finalize()
        if self.stream_end or not self.stream_start:
            return None
        self.stream_end = True
        tail = self._text[self._sent:]
        tail = TRAILING_OPEN.sub("", tail)  # what a stop inside the completed marker leaves
        self._sent = len(self._text)
        return self._emit(tail)
