"""A real OpenAI-compatible server: llama-cpp-python's (`python -m llama_cpp.server`) on 127.0.0.1
with the embedded GGUF. A job runs through `model=litellm` against it (adapter=structured: the
server takes JSON mode, not a schema, so the adapter sends {"type": "json_object"}), and
`runner.serve` streams a program through it (adapter=plain: under JSON mode without a schema the
135M model may nest the label in an object, which the signature's Literal then rejects). The server is stopped after the module."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest

from conftest import free_port, run_runner, serving, sse_events

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(__import__("importlib").util.find_spec("sse_starlette") is None,
                                 reason="llama-cpp-python[server] is not installed (the dev extra installs it)")]

ALIAS = "smollm2"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from runner.lm.embedded import embedded_gguf_path

    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_gguf_path()), "--model_alias", ALIAS,
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--verbose", "false"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/models", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("llama_cpp.server did not start")
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _model(base: str) -> list[str]:
    return ["model=litellm", f"model.model=openai/{ALIAS}", f"model.api_base={base}", "model.api_key=not-needed",
            "model.max_tokens=64", "model.num_retries=0"]


def test_a_job_runs_through_the_server_with_max_tokens_honoured(server, tmp_path):
    proc = run_runner([*_model(server), "adapter=structured", "task=sentiment", "optimizer=labeled_fewshot",
                       "optimizer.init.k=2", "task.splits.n_train=4", "task.splits.n_dev=4"], tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("dspy-runner").experiment_id])
    m = run.data.metrics
    assert run.info.status == "FINISHED" and m["baseline_lm_calls"] == 4 and m["compiled_lm_calls"] == 4
    assert 0 < m["baseline_completion_tokens"] <= 4 * 64  # the server read max_tokens
    assert run.data.params["lm.model"] == f"openai/{ALIAS}"
    manifest = json.loads((tmp_path / "run" / "program" / "manifest.json").read_text())
    assert manifest["model"] == f"openai/{ALIAS}"


def test_serve_streams_through_the_server(server, tmp_path):
    proc = run_runner([*_model(server), "adapter=plain", "task=sentiment", "optimizer=none",
                       "task.splits.n_dev=2"], tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    program = tmp_path / "run" / "program"
    args = [*_model(server), "timeout_s=120", f"programs=[{{name: s, uri: '{program}'}}]"]
    with serving(args, tmp_path / "serve", startup_s=120) as srv:
        with httpx.stream("POST", f"{srv['base']}/programs/s/stream", json={"text": "A wonderful, moving film."},
                          timeout=120) as r:
            assert r.status_code == 200
            events = sse_events(r)
    assert events and events[-1][0] == "prediction", events[-3:]
    tokens = [d["chunk"] for e, d, _ in events if e == "token"]
    final = events[-1][1]["outputs"]["sentiment"]
    # adapter=plain streams the bare reply and reads the label out of it at the end
    assert final in ("positive", "negative") and final in "".join(tokens)
