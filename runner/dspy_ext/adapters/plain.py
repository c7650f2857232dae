"""A plain-prompt adapter for models too small to follow DSPy's chat format.

ChatAdapter writes a system message describing `[[ ## field ## ]]` sections and asks for the
reply in that structure. SmolLM2-135M mostly answers such prompts with Python code: on the
bundled sentiment task it parses 4 of 32 replies zero-shot, while the same model asked the
plain question ("Is this sentence positive or negative?") is right on 64% of the 300 test rows.
`PlainAdapter` asks the plain question: the instructions, the inputs as `name: value` lines
and what to answer with, all in one user turn; demos are earlier user/assistant turns in the
same shape. A one-output signature is answered bare ("positive", "42"); several outputs as
`name: value` lines. Parsing reuses LenientChatAdapter's recovery, so a reply that uses the
headers anyway still parses.
"""

from __future__ import annotations

import re
from typing import Any, Literal, get_args, get_origin

from dspy.utils.exceptions import AdapterParseError

from runner.dspy_ext.adapters.lenient import HEADER, LenientChatAdapter, coerce


def _hint(field) -> str:
    """What to write for one output field, in words a small model follows."""
    annotation = field.annotation
    if get_origin(annotation) is Literal:
        return "one of: " + ", ".join(str(a) for a in get_args(annotation))
    if annotation is int:
        return "a whole number"
    if annotation is float:
        return "a number"
    desc = (field.json_schema_extra or {}).get("desc", "")
    return desc if desc and not desc.startswith("${") else "text"


def _literal(text: str, options: tuple) -> Any:
    """The one option named in `text` ("Positive." -> "positive"); None when none or several are."""
    found = [o for o in options if re.search(rf"(?<!\w){re.escape(str(o).lower())}(?!\w)", text.lower())]
    return found[0] if len(found) == 1 else None


class PlainAdapter(LenientChatAdapter):
    """Plain question in, bare answer (or `name: value` lines) out."""

    def __init__(self, callbacks=None):
        super().__init__(callbacks=callbacks, stop_at_completed=False)

    def _inputs(self, signature, values: dict) -> str:
        return "\n".join(f"{name}: {values[name]}" for name in signature.input_fields if name in values)

    def format_assistant_message_content(self, signature, outputs: dict, missing_field_message=None) -> str:
        """A reply as this adapter asks for it: the bare value, or `name: value` lines."""
        names = list(signature.output_fields)
        if len(names) == 1:
            return str(outputs.get(names[0], missing_field_message or ""))
        return "\n".join(f"{name}: {outputs.get(name, missing_field_message or '')}" for name in names)

    def _ask(self, signature) -> str:
        outputs = signature.output_fields
        if len(outputs) == 1:
            name, field = next(iter(outputs.items()))
            return f"Answer with the {name} only ({_hint(field)})."
        lines = "\n".join(f"{name}: <{_hint(field)}>" for name, field in outputs.items())
        return f"Answer with these lines only:\n{lines}"

    def format(self, signature, demos: list[dict], inputs: dict) -> list[dict[str, Any]]:
        head = signature.instructions.strip()
        ask = self._ask(signature)
        messages = []
        for demo in demos:
            if all(k in demo for k in (*signature.input_fields, *signature.output_fields)):
                messages.append({"role": "user", "content": f"{head}\n\n{self._inputs(signature, demo)}\n\n{ask}"})
                reply = self.format_assistant_message_content(signature, demo)
                messages.append({"role": "assistant", "content": reply})
        messages.append({"role": "user", "content": f"{head}\n\n{self._inputs(signature, inputs)}\n\n{ask}"})
        return messages

    def parse(self, signature, completion: str) -> dict[str, Any]:
        outputs = signature.output_fields
        if len(outputs) == 1 and not HEADER.search(completion):  # a reply with headers: parsed as ChatAdapter's
            name, field = next(iter(outputs.items()))
            text = re.sub(rf"(?i)^\W*{re.escape(name)}\W*[:=]", "", completion.strip()).strip()
            if get_origin(field.annotation) is Literal:
                value = _literal(text, get_args(field.annotation))
                if value is not None:
                    return {name: value}
            elif text:
                try:
                    return {name: coerce(text, field.annotation)}
                except Exception:
                    pass
        try:
            return super().parse(signature, completion)
        except AdapterParseError:
            raise AdapterParseError(adapter_name="PlainAdapter", signature=signature, lm_response=completion,
                                    message="no value for the output field(s) in the reply") from None
