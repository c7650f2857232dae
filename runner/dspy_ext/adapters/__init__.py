"""Adapters: how a signature becomes a prompt and a reply becomes fields.

lenient     ChatAdapter's format, read loosely (adapter=lenient)
plain       one plain question, a bare answer (adapter=plain)
structured  JSON under the signature's enforced schema (adapter=structured)
"""

from runner.dspy_ext.adapters.lenient import LenientChatAdapter
from runner.dspy_ext.adapters.plain import PlainAdapter
from runner.dspy_ext.adapters.structured import StructuredAdapter, output_model

__all__ = ["LenientChatAdapter", "PlainAdapter", "StructuredAdapter", "output_model"]
