"""Signatures and dataset rows: resolving a signature spec and checking rows against it.

A task's `signature` is either an inline DSPy string ("question -> answer") or the dotted
path of a `dspy.Signature` class. Rows are validated before any LM call, so a malformed
dataset costs nothing but one clear error.
"""

from __future__ import annotations

import importlib
from typing import Any, Iterable

from runner.errors import RunnerError


def resolve_signature(spec: Any):
    """Return a `dspy.Signature` class for an inline string, a dotted class path, or a class."""
    import dspy

    if isinstance(spec, type) and issubclass(spec, dspy.Signature):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise RunnerError(f"task.signature is missing or not a string: {spec!r}",
                          'set task.signature="question -> answer" or a dotted Signature class path')
    if "->" in spec:
        try:
            return dspy.Signature(spec)
        except Exception as exc:  # dspy raises ValueError/SyntaxError on a malformed spec
            raise RunnerError(f"invalid inline signature {spec!r}: {exc}",
                              'use the form "input1, input2 -> output"') from exc
    module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise RunnerError(f"task.signature {spec!r} is neither an inline signature nor a class path",
                          'write it as "input1, input2 -> output" or as module.ClassName')
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise RunnerError(f"cannot import signature {spec!r}: {exc}",
                          "check task.signature (module.ClassName)") from exc
    if not (isinstance(obj, type) and issubclass(obj, dspy.Signature)):
        raise RunnerError(f"{spec!r} is not a dspy.Signature subclass", "point task.signature at a Signature class")
    return obj


def answer_field(signature, configured: str | None = None) -> str:
    """The output field that generic metrics compare: the configured one or the last output."""
    outputs = list(signature.output_fields)
    if configured:
        if configured not in outputs:
            raise RunnerError(f"task.answer_field={configured!r} is not an output of the signature {outputs}",
                              "set task.answer_field to one of the signature's output fields")
        return configured
    return outputs[-1]


def validate_rows(rows: Iterable[dict], signature, source: str) -> None:
    """Every row must carry every input and output field of `signature`, non-empty."""
    needed = list(signature.input_fields) + list(signature.output_fields)
    for i, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise RunnerError(f"{source}: row {i} is not an object: {row!r:.80}", "each row must be a JSON object / CSV record")
        for name in needed:
            if name not in row or row[name] is None or (isinstance(row[name], str) and not row[name].strip()):
                raise RunnerError(f"{source}: row {i} is missing field {name!r} (has {sorted(row)})",
                                  f"every row needs the signature fields {needed}")


def to_examples(rows: Iterable[dict], signature) -> list:
    """dspy.Examples with the signature's inputs marked as inputs."""
    import dspy

    inputs = list(signature.input_fields)
    return [dspy.Example(**row).with_inputs(*inputs) for row in rows]
