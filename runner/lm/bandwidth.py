"""Memory-bandwidth probe and the decode-speed ceiling it implies.

Decoding one token reads (roughly) every weight once, so tokens/s can never exceed
bandwidth / model bytes. Measuring bandwidth in the same run as the benchmark makes the
"fraction of the limit" comparable across machines.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor


def measure_read_gbs(size_mb: int = 1024, repeats: int = 5, threads: int | None = None) -> float:
    """Best-of-`repeats` read bandwidth in GB/s: `threads` (default: every usable core) take the
    max over disjoint slices of one large float32 array at once.

    Why these choices: decoding uses every core, so a one-thread probe would understate the
    limit (numpy releases the GIL inside the reduction). `max` is a pure SIMD read; a float64
    `sum` is pairwise summation and tops out below memory speed on one core (10 vs 15 GB/s
    measured on the 2-core dev machine). The array must be larger than the last-level cache
    (260 MiB on that machine) or the probe measures the cache instead of memory."""
    import numpy as np

    if not threads:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    data = np.ones(size_mb * 2**20 // 4, dtype=np.float32)
    chunks = np.array_split(data, threads)
    data.max()  # fault the pages in
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(np.max, chunks))
            best = min(best, time.perf_counter() - start)
    return data.nbytes / best / 1e9


def decode_limit_tps(bandwidth_gbs: float, model_bytes: int) -> float:
    """Upper bound on decode tokens/s when each token streams `model_bytes` from memory."""
    return bandwidth_gbs * 1e9 / model_bytes if model_bytes else float("nan")
