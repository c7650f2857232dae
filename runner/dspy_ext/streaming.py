"""Stream one output field as the LM writes it.

DSPy's StreamListener starts a field only at the exact text `[[ ## answer ## ]]`. The embedded
135M model often writes `[[## answer ## ]]`; the reply still parses (LenientChatAdapter reads
header variants), but the stock listener never starts and the client receives no tokens. This
listener finds headers with the adapter's own pattern in the text received so far, sends the
field's text as it arrives, and holds back only what could still turn into the next header.

With a JSON adapter (JSONAdapter, StructuredAdapter) it streams the field's decoded value: a
string's characters, escapes resolved, without its quotes; a number, literal or nested value as
written. DSPy's own JSON listener sends the raw JSON text, quotes included, so the streamed text
differed from the parsed answer. With adapter=plain, whose reply is the bare value (one output
field) or `name: value` lines, it streams the value. XML replies keep DSPy's listener logic.
"""

from __future__ import annotations

import json
import re

import dspy
from dspy.streaming import StreamListener, StreamResponse

from runner.dspy_ext.adapters.lenient import HEADER, TRAILING_OPEN
from runner.dspy_ext.adapters.plain import PlainAdapter

# The tail of the buffer that may be the start of a header: `[`, `[[`, `[[ #`, `[[## answ`, ...
_PARTIAL_HEADER = re.compile(r"\[(\[([ \t]*#*([ \t]*\w*([ \t]*#*([ \t]*\]?)?)?)?)?)?$")


def _stock_listener_handles(adapter) -> bool:
    return isinstance(adapter, dspy.XMLAdapter)


def _decode_string(text: str, i: int) -> tuple[str, int, bool]:
    """Decode JSON string content from text[i:] (after the opening quote): (characters, index after
    what was consumed, whether the closing quote was reached). An escape cut by the end of the
    text is left for the next call."""
    out = []
    while i < len(text):
        c = text[i]
        if c == '"':
            return "".join(out), i + 1, True
        if c != "\\":
            out.append(c)
            i += 1
            continue
        if i + 1 >= len(text):
            break
        if text[i + 1] != "u":
            out.append(json.loads(f'"{text[i:i + 2]}"'))
            i += 2
            continue
        if i + 6 > len(text):
            break
        code = int(text[i + 2:i + 6], 16)
        if 0xD800 <= code < 0xDC00:  # a surrogate pair is one character
            if i + 12 > len(text):
                break
            out.append(json.loads(f'"{text[i:i + 12]}"'))
            i += 12
        else:
            out.append(chr(code))
            i += 6
    return "".join(out), i, False


def _scan_raw(text: str, i: int, state: dict) -> tuple[str, int, bool]:
    """A non-string JSON value (number, literal, array, object) from text[i:], as written, up to the
    `,` or `}` that ends it at depth 0. `state` keeps nesting depth and string state across calls."""
    start = i
    while i < len(text):
        c = text[i]
        if state["in_str"]:
            if state["escape"]:
                state["escape"] = False
            elif c == "\\":
                state["escape"] = True
            elif c == '"':
                state["in_str"] = False
        elif c == '"':
            state["in_str"] = True
        elif c in "[{":
            state["depth"] += 1
        elif c in "]}":
            if state["depth"] == 0:
                return text[start:i], i, True
            state["depth"] -= 1
        elif c == "," and state["depth"] == 0:
            return text[start:i], i, True
        i += 1
    return text[start:i], i, False


class LenientStreamListener(StreamListener):
    """A StreamListener for ChatAdapter-style replies whose headers may be written loosely."""

    def __init__(self, signature_field_name: str, **kwargs):
        super().__init__(signature_field_name, **kwargs)
        self._reset()  # _text, and _sent: the index in _text up to which the field value was consumed
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
        self._json_kind = None  # "string" or "raw" once the JSON value has begun
        self._raw_state = {"depth": 0, "in_str": False, "escape": False}

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
        if isinstance(dspy.settings.adapter, PlainAdapter):
            return self._receive_plain()
        if isinstance(dspy.settings.adapter, dspy.JSONAdapter):
            return self._receive_json()
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

    def _single_output(self) -> bool:
        signature = getattr(getattr(self, "predict", None), "signature", None)
        return signature is None or len(signature.output_fields) == 1

    def _receive_plain(self) -> StreamResponse | None:
        name = self.signature_field_name
        if not self.stream_start:
            text = self._text
            label = re.search(rf"(?im)^\W*{re.escape(name)}\W*[:=][ \t]*", text)
            if label:
                self._sent = label.end()
            elif not self._single_output():
                return None  # several fields: this one starts at its `name:` line
            else:
                head = text.lstrip().lower()
                if len(head) <= len(name) + 2 and f"{name}:".lower().startswith(head.rstrip(": =")):
                    return None  # may still become the `name:` label of a bare answer
                self._sent = 0
            self.stream_start = True
        rest = self._text[self._sent:]
        if not self._single_output() and "\n" in rest:  # its line ends the field
            rest, self.stream_end = rest[: rest.index("\n")], True
        self._sent += len(rest)
        return self._emit(rest)

    def _receive_json(self) -> StreamResponse | None:
        if not self.stream_start:
            key = re.search(rf'"{re.escape(self.signature_field_name)}"\s*:\s*', self._text)
            if key is None or key.end() >= len(self._text):
                return None  # the key, or its value's first character, has not arrived yet
            self.stream_start = True
            self._json_kind = "string" if self._text[key.end()] == '"' else "raw"
            self._sent = key.end() + (1 if self._json_kind == "string" else 0)
        if self._json_kind == "string":
            value, self._sent, self.stream_end = _decode_string(self._text, self._sent)
        else:
            value, self._sent, self.stream_end = _scan_raw(self._text, self._sent, self._raw_state)
            if self.stream_end:
                value = value.rstrip()
        if value or self.stream_end:
            return StreamResponse(self.predict_name, self.signature_field_name, value, is_last_chunk=self.stream_end)
        return None

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
        plain = isinstance(dspy.settings.adapter, PlainAdapter)
        if plain and not self.stream_start and self._single_output() and self._text.strip():
            self.stream_start, self._sent = True, 0  # a bare answer short enough to look like a label
        if self.stream_end or not self.stream_start:
            return None
        self.stream_end = True
        if plain:
            tail = self._text[self._sent:]
            self._sent = len(self._text)
            return self._emit(tail)
        if isinstance(dspy.settings.adapter, dspy.JSONAdapter):  # the reply ended inside the value
            tail = self._text[self._sent:].rstrip().rstrip("}").rstrip()
            self._sent = len(self._text)
            return StreamResponse(self.predict_name, self.signature_field_name, tail, is_last_chunk=True)
        tail = self._text[self._sent:]
        tail = TRAILING_OPEN.sub("", tail)  # what a stop inside the completed marker leaves
        self._sent = len(self._text)
        return self._emit(tail)
