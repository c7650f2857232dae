"""An output adapter for small local models.

DSPy's ChatAdapter expects `[[ ## field ## ]]` headers. A 135M-parameter model often writes
`answer: 42`, a bare value, or a fenced block instead; ChatAdapter then fails and retries the
whole call with JSONAdapter, which such a model follows even less. `LenientChatAdapter`
formats prompts exactly like ChatAdapter and parses well-formed replies identically. Headers
written with other spacing or hash counts (`[[## answer ## ]]`) are read as headers; only when
strict parsing still fails does it recover fields from `name: value` lines, or, for a signature
with a single output field, from the whole reply (numbers from the last number written). What
it cannot recover still raises, so a wrong format scores 0 instead of silently passing.
"""

from __future__ import annotations

import re
from typing import Any

import dspy
from dspy.adapters.utils import parse_value
from dspy.utils.exceptions import AdapterParseError

from runner.dspy_ext.metrics import last_number

# A field header as small models write it: `[[ ## answer ## ]]`, `[[## answer ## ]]`, `[[ #answer# ]]`.
HEADER = re.compile(r"\[\[[ \t]*#+[ \t]*(\w+)[ \t]*#+[ \t]*\]\]")
# Stop text: the end of the completed marker, however its opening brackets were spaced. What is
# left of the marker (`[[` or `[[ `) is cut by `normalize_headers`.
COMPLETED_STOP = "## completed ##"
TRAILING_OPEN = re.compile(r"\s*\[\[[ \t#]*$")


def normalize_headers(completion: str) -> str:
    """Rewrite every header variant to ChatAdapter's `[[ ## name ## ]]` and drop a dangling `[[`
    left where generation stopped inside the completed marker."""
    return TRAILING_OPEN.sub("", HEADER.sub(lambda m: f"[[ ## {m.group(1)} ## ]]", completion))


def coerce(text: str, annotation) -> Any:
    """`text` parsed as `annotation`; an int/float also from the last number written in it."""
    text = text.strip().strip("`").strip()
    try:
        return parse_value(text, annotation)
    except (ValueError, TypeError, Exception):
        if annotation in (int, float):
            num = last_number(text)
            if num is not None:
                return annotation(num)
        raise


class LenientChatAdapter(dspy.ChatAdapter):
    """ChatAdapter with field recovery for models that ignore the header format."""

    def __init__(self, callbacks=None, stop_at_completed: bool = True):
        # No JSON retry: it doubles the cost of every malformed reply and rarely helps small models.
        super().__init__(callbacks=callbacks, use_json_adapter_fallback=False)
        self.stop_at_completed = stop_at_completed

    def _with_stop(self, lm_kwargs: dict, signature) -> dict:
        """Stop at the `[[ ## completed ## ]]` marker the prompt asks for (matched without its
        brackets, whose spacing small models vary), or when the first output header comes round
        again: small models otherwise repeat fields until max_tokens, which costs most of the
        decode time."""
        if not self.stop_at_completed:
            return lm_kwargs
        stop = lm_kwargs.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        first = next(iter(signature.output_fields))
        extra = [s for s in (COMPLETED_STOP, f"\n\n[[ ## {first} ## ]]") if s not in stop]
        return {**lm_kwargs, "stop": [*stop, *extra]}

    def __call__(self, lm, lm_kwargs, signature, demos, inputs):
        return super().__call__(lm, self._with_stop(lm_kwargs, signature), signature, demos, inputs)

    async def acall(self, lm, lm_kwargs, signature, demos, inputs):
        return await super().acall(lm, self._with_stop(lm_kwargs, signature), signature, demos, inputs)

    def parse(self, signature, completion: str) -> dict[str, Any]:
        completion = normalize_headers(completion)
        try:
            return super().parse(signature, completion)
        except AdapterParseError as strict_error:
            recovered = self._recover(signature, completion)
            if recovered is None:
                raise strict_error
            return recovered

    def _recover(self, signature, completion: str) -> dict[str, Any] | None:
        outputs = signature.output_fields
        fields: dict[str, Any] = {}
        for name, field in outputs.items():
            match = re.search(rf"(?im)^\W*{re.escape(name)}\W*[:=]\s*(.+)$", completion)
            if match:
                try:
                    fields[name] = coerce(match.group(1), field.annotation)
                except Exception:
                    continue
        missing = [n for n in outputs if n not in fields]
        if len(missing) == 1 and missing[0] == list(outputs)[-1]:
            # The last output (the answer) written bare after the other fields, or alone.
            name = missing[0]
            try:
                fields[name] = coerce(completion if len(outputs) == 1 else completion.splitlines()[-1],
                                       outputs[name].annotation)
            except Exception:
                return None
        if set(fields) != set(outputs):
            return None
        return fields
