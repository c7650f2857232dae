"""Adapters: how a signature becomes a prompt and a reply becomes fields."""

from runner.dspy_ext.adapters.structured import StructuredAdapter, output_model

__all__ = ["StructuredAdapter", "output_model"]
