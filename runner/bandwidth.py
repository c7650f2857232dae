"""Memory-bandwidth probe and the decode-speed ceiling it implies.

Decoding one token reads (roughly) every weight once, so tokens/s can never exceed
bandwidth / model bytes. Measuring bandwidth in the same run as the benchmark makes the
"fraction of the limit" comparable across machines.
"""

from __future__ import annotations

import time


def measure_read_gbs(size_mb: int = 256, repeats: int = 5) -> float:
    """Best-of-`repeats` sequential read bandwidth in GB/s (numpy sum over a large array)."""
    import numpy as np

    data = np.ones(size_mb * 2**20 // 8, dtype=np.float64)
    data.sum()  # fault the pages in
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        data.sum()
        best = min(best, time.perf_counter() - start)
    return data.nbytes / best / 1e9


def decode_limit_tps(bandwidth_gbs: float, model_bytes: int) -> float:
    """Upper bound on decode tokens/s when each token streams `model_bytes` from memory."""
    return bandwidth_gbs * 1e9 / model_bytes if model_bytes else float("nan")
