"""A bounded load test of runner.serve on loopback: 200 valid requests, 50 at a time, plus malformed
ones mixed in; no 5xx for valid input, every malformed one a 4xx; p50/p95 latency printed. The
model is the scripted streaming engine (tests/streaming.py), so the server is what is measured."""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest

from conftest import SEARCHPATH, serving

pytestmark = pytest.mark.slow

VALID, CONCURRENCY = 200, 50
MALFORMED = [{"qestion": "typo"}, {"question": 42}, {}, {"question": "x" * 1_200_000}]  # the last: over 1 MB


def test_fifty_concurrent_requests_and_malformed_ones(tmp_path):
    import httpx

    from test_loading import _compiled, _save_v1

    _save_v1(_compiled(), tmp_path / "a" / "program")
    args = [SEARCHPATH, "model=streaming", "timeout_s=60", f"programs=[{{name: a, uri: '{tmp_path / 'a'}'}}]"]
    with serving(args, tmp_path / "srv") as srv:
        url = f"{srv['base']}/programs/a"

        async def one(client, body):
            t0 = time.perf_counter()
            r = await client.post(url, json=body, timeout=60)
            return r.status_code, time.perf_counter() - t0

        async def go():
            limits = httpx.Limits(max_connections=CONCURRENCY)
            async with httpx.AsyncClient(limits=limits) as client:
                valid, bad = [], []
                for start in range(0, VALID, CONCURRENCY):
                    batch = [one(client, {"question": f"What is {i} + {i}?"}) for i in range(start, start + CONCURRENCY)]
                    batch += [one(client, body) for body in MALFORMED]
                    results = await asyncio.gather(*batch)
                    valid += results[:CONCURRENCY]
                    bad += results[CONCURRENCY:]
                return valid, bad

        t0 = time.perf_counter()
        valid, bad = asyncio.run(go())
        elapsed = time.perf_counter() - t0
    latencies = sorted(t for _, t in valid)
    p50 = statistics.median(latencies)
    p95 = latencies[int(0.95 * len(latencies)) - 1]
    print(f"\n{len(valid)} valid requests ({CONCURRENCY} at a time) + {len(bad)} malformed in {elapsed:.1f} s: "
          f"p50 {p50:.2f} s, p95 {p95:.2f} s")
    assert [code for code, _ in valid] == [200] * VALID
    assert all(400 <= code < 500 for code, _ in bad), sorted({code for code, _ in bad})
    assert elapsed < 120
