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
                if getattr(entry.get("response"), "cache_hit", False):
                    t.cache_hits += 1
                    continue
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
