"""Counting what every phase costs: LM calls, cache hits, tokens, LM time, errors.

A DSPy callback sees every LM call from every thread (Evaluate and the optimizers run
in parallel), so counting happens here rather than by diffing a history that is capped and
shared. Token counts come from the LM's own history entry for the call (usage reported by the
provider); cache hits cost no tokens.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass

from dspy.utils.callback import BaseCallback


@dataclass
class Usage:
    lm_calls: int = 0
    cache_hits: int = 0
    lm_errors: int = 0
    truncated: int = 0  # replies cut at max_tokens
    prompt_tokens: int = 0
    completion_tokens: int = 0
    lm_seconds: float = 0.0

    def __sub__(self, other: "Usage") -> "Usage":
        return Usage(**{k: v - getattr(other, k) for k, v in asdict(self).items()})

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def is_cache_hit(entry: dict) -> bool:
    """Whether a DSPy history entry was served from DSPy's cache. Through LiteLLM the response
    carries `cache_hit`; through an engine (DSPy 3.4), the entry of a cached call reports no usage
    of its own while the response loaded from the cache keeps the usage recorded when it was made."""
    response = entry.get("response")
    if getattr(response, "cache_hit", False):
        return True
    recorded = getattr(response, "usage", None)
    return not entry.get("usage") and bool(getattr(recorded, "input_tokens", None) or getattr(recorded, "output_tokens", None))


def finish_reason(entry: dict) -> str | None:
    """Why generation ended, from a history entry (an engine's Response or LiteLLM's ModelResponse)."""
    response = entry.get("response")
    if hasattr(response, "finish_reason"):
        return response.finish_reason
    try:
        return response.choices[0].finish_reason
    except (AttributeError, IndexError, TypeError):
        return None


class UsageMeter(BaseCallback):
    """Thread-safe running totals over all LM calls; `snapshot()` for per-phase deltas."""

    def __init__(self):
        self._lock = threading.Lock()
        self._total = Usage()
        self._starts: dict[str, tuple[float, object]] = {}
        self._seen: set[str] = set()
        self.last_error: BaseException | None = None
        self.listeners: list = []

    def snapshot(self) -> Usage:
        with self._lock:
            return Usage(**self._total.as_dict())

    def on_lm_start(self, call_id, instance, inputs):
        with self._lock:
            self._starts[call_id] = (time.perf_counter(), instance)

    def on_lm_end(self, call_id, outputs, exception=None):
        with self._lock:
            started, lm = self._starts.pop(call_id, (time.perf_counter(), None))
            t = self._total
            t.lm_calls += 1
            t.lm_seconds += time.perf_counter() - started
            if exception is not None:
                t.lm_errors += 1
                self.last_error = exception
            for entry in self._new_entries(lm):
                if is_cache_hit(entry):
                    t.cache_hits += 1
                    continue
                if finish_reason(entry) == "length":
                    t.truncated += 1
                usage = entry.get("usage") or {}
                t.prompt_tokens += int(usage.get("prompt_tokens") or 0)
                t.completion_tokens += int(usage.get("completion_tokens") or 0)
        for listener in self.listeners:
            listener()

    def _new_entries(self, lm):
        """History entries of `lm` not counted yet (newest last)."""
        fresh = []
        for entry in reversed(getattr(lm, "history", None) or []):
            uid = entry.get("uuid")
            if uid is None or uid in self._seen:
                break
            self._seen.add(uid)
            fresh.append(entry)
        return reversed(fresh)
