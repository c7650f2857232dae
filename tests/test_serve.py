"""runner.serve: a real uvicorn server on 127.0.0.1 (random free port), called over HTTP.

The model is tests/streaming.py: a LiteLLM custom provider that streams a scripted reply
token by token (answer 1234.5), so SSE streaming is tested end to end without a real LM.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from conftest import SEARCHPATH, serving, sse_events


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from test_loading import _compiled, _save_v1

    tmp = tmp_path_factory.mktemp("serve")
    _save_v1(_compiled(), tmp / "a" / "program")
    _save_v1(_compiled("ChainOfThought"), tmp / "b" / "program", module="ChainOfThought")
    _save_v1(_compiled(), tmp / "p" / "program")
    man = json.loads((tmp / "b" / "program" / "manifest.json").read_text())
    man["scores"]["compiled_score"] = 0.9  # b is the better program for best_of
    (tmp / "b" / "program" / "manifest.json").write_text(json.dumps(man))
    man = json.loads((tmp / "p" / "program" / "manifest.json").read_text())
    man["config"] = {"adapter": {"_target_": "runner.dspy_ext.adapters.plain.PlainAdapter"}}  # compiled with adapter=plain
    (tmp / "p" / "program" / "manifest.json").write_text(json.dumps(man))
    programs = (f"programs=[{{name: a, uri: '{tmp / 'a'}'}}, {{name: b, uri: '{tmp / 'b' / 'program'}'}}, "
                f"{{name: p, uri: '{tmp / 'p' / 'program'}'}}]")
    with serving([SEARCHPATH, "model=streaming", "timeout_s=1.5", "max_body_bytes=100000", programs], tmp) as srv:
        yield srv


def test_health_and_openapi(server):
    health = httpx.get(f"{server['base']}/health", timeout=5).json()
    assert health == {"status": "ok", "model": "scriptedstream/scripted", "programs": ["a", "b", "p"]}
    spec = httpx.get(f"{server['base']}/openapi.json", timeout=5).json()
    assert {"/programs/a", "/programs/a/stream", "/programs/b", "/ensemble"} <= set(spec["paths"])
    assert httpx.get(f"{server['base']}/docs", timeout=5).status_code == 404  # Swagger's CDN page is off
    assert spec["components"]["schemas"]["a_inputs"]["required"] == ["question"]


def test_predict_logs_latency_and_tokens(server):
    r = httpx.post(f"{server['base']}/programs/a", json={"question": "What is 1+1?"}, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["outputs"] == {"answer": 1234.5}
    assert body["usage"]["completion_tokens"] == 5 and body["usage"]["prompt_tokens"] > 0
    time.sleep(0.2)
    lines = [json.loads(l) for l in server["log"].read_text().splitlines() if l.startswith("{")]
    req = [l for l in lines if l.get("msg") == "request" and l.get("path") == "/programs/a"]
    assert req and req[-1]["status"] == 200 and req[-1]["completion_tokens"] == 5 and req[-1]["latency_s"] > 0


def test_validation_names_fields(server):
    r = httpx.post(f"{server['base']}/programs/a", json={"qestion": "typo"}, timeout=5)
    assert r.status_code == 422
    locs = [tuple(e["loc"]) for e in r.json()["detail"]]
    assert ("body", "question") in locs and ("body", "qestion") in locs
    r = httpx.post(f"{server['base']}/ensemble", json={"inputs": {}}, timeout=5)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "inputs", "question"]


def test_stream_sends_tokens_as_they_come(server):
    with httpx.stream("POST", f"{server['base']}/programs/b/stream", json={"question": "1+1?"}, timeout=10) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    tokens = [(d["chunk"], t) for e, d, t in events if e == "token"]
    assert len(tokens) >= 3 and "".join(c for c, _ in tokens).strip() == "1234.5"
    assert all(c for c, _ in tokens)  # no empty token events
    assert events[-1][0] == "prediction" and events[-1][1]["outputs"]["answer"] == 1234.5
    assert tokens[-1][1] - tokens[0][1] > 0.06  # spread over time, not one buffered blob


def test_ensemble_majority_and_best_of(server):
    r = httpx.post(f"{server['base']}/ensemble", json={"inputs": {"question": "1+1?"}}, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["answer"] == 1234.5 and body["votes"] == {"1234.5": 3} and body["chosen"] == "b"
    r = httpx.post(f"{server['base']}/ensemble", json={"inputs": {"question": "1+1?"}, "strategy": "best_of",
                                                       "programs": ["a", "b"]}, timeout=10)
    assert r.json()["chosen"] == "b" and r.json()["votes"] is None
    assert httpx.post(f"{server['base']}/ensemble", json={"inputs": {"question": "x"}, "programs": ["zzz"]},
                      timeout=5).status_code == 404


def test_timeout_is_504(server):
    t0 = time.monotonic()
    r = httpx.post(f"{server['base']}/programs/a", json={"question": "SLOW please"}, timeout=10)
    assert r.status_code == 504 and "timeout_s=1.5" in r.json()["detail"]
    assert time.monotonic() - t0 < 3


def test_each_program_runs_with_its_manifest_adapter_and_streams(server):
    programs = httpx.get(f"{server['base']}/programs", timeout=5).json()
    assert programs["p"]["adapter"] == "PlainAdapter" and programs["a"]["adapter"] == "LenientChatAdapter"
    r = httpx.post(f"{server['base']}/programs/p", json={"question": "What is 1+1?"}, timeout=10)
    assert r.status_code == 200 and r.json()["outputs"] == {"answer": 1234.5}  # a bare answer, parsed by PlainAdapter
    with httpx.stream("POST", f"{server['base']}/programs/p/stream", json={"question": "1+1?"}, timeout=10) as r:
        events = sse_events(r)
    tokens = [d["chunk"] for e, d, _ in events if e == "token"]
    assert tokens == ["12", "34", ".5"] and events[-1][1]["outputs"]["answer"] == 1234.5


def test_oversized_bodies_and_inputs(server):
    r = httpx.post(f"{server['base']}/programs/a", json={"question": "x" * 200_000}, timeout=10)
    assert r.status_code == 413 and "max_body_bytes" in r.json()["detail"]
    r = httpx.post(f"{server['base']}/programs/a", json={"question": "word " * 5000}, timeout=10)
    assert r.status_code == 422 and "context window" in r.json()["detail"]


@pytest.mark.parametrize("body, loc", [({"inputs": {"question": "x"}, "strategy": "majority", "extra": 1}, ["body", "extra"]),
                                       ({"inputs": {"question": {"not": "a string"}}}, ["body", "inputs", "question"]),
                                       ({"inputs": {"question": "x", "nope": 1}}, ["body", "inputs", "nope"]),
                                       ({"inputs": {"question": "x"}, "strategy": "loudest"}, ["body", "strategy"])])
def test_ensemble_validates_like_the_program_routes(server, body, loc):
    r = httpx.post(f"{server['base']}/ensemble", json=body, timeout=10)
    assert r.status_code == 422 and loc in [e["loc"] for e in r.json()["detail"]], r.text
