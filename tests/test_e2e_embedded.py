"""The real thing: `python -m runner` and `python -m runner.serve` on the embedded SmolLM2-135M
model (llama.cpp on this CPU): a program compiled by the runner is served and streamed over HTTP."""

from __future__ import annotations

import json

import httpx
import pytest

from conftest import ROOT, run_runner, serving, sse_events

pytestmark = pytest.mark.slow


def test_runner_on_embedded_model(tmp_path):
    proc = run_runner(["optimizer=labeled_fewshot", "task=gsm8k", "task.splits.n_train=3", "task.splits.n_dev=3",
                       "optimizer.init.k=2", "model.max_tokens=48"], tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    run = client.search_runs([client.get_experiment_by_name("dspy-runner").experiment_id])[0]
    assert run.info.status == "FINISHED"
    m, p = run.data.metrics, run.data.params
    assert p["lm.model"].endswith("/embedded")
    assert p["backend.backend"] in ("llamacpp", "mlx", "torch") and p["backend.reason"]
    # real generation happened: uncached calls with tokens reported by the provider
    assert m["baseline_lm_calls"] == 3 and m["baseline_prompt_tokens"] > 100 and m["baseline_completion_tokens"] > 0
    assert m["lm_completion_tokens_per_s"] > 0
    manifest = json.loads((tmp_path / "run" / "program" / "manifest.json").read_text())
    state = json.loads((tmp_path / "run" / "program" / "program.json").read_text())
    assert manifest["model"].endswith("/embedded")
    assert len(state["demos"]) == 2  # a Predict program: its own state is the predictor's
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"hydra", "program_state"}


def test_serve_streams_a_compiled_program_from_the_real_model(tmp_path):
    """Compile a free-text QA program on the embedded model, then serve it with the llama.cpp backend."""
    qa = ROOT / "signatures" / "data" / "examples" / "qa.jsonl"
    proc = run_runner(["model=llamacpp", "task=custom", "task.signature='question -> answer'", f"task.data={qa}",
                       "metric=f1", "optimizer=labeled_fewshot", "optimizer.init.k=2", "model.max_tokens=48"],
                      tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    program = tmp_path / "run" / "program"
    serve_args = ["model=llamacpp", "model.max_tokens=48", "timeout_s=120", f"programs=[{{name: qa, uri: '{program}'}}]"]
    with serving(serve_args, tmp_path / "serve", startup_s=180) as srv:
        health = httpx.get(f"{srv['base']}/health", timeout=5).json()
        assert health["model"] == "llamacpp/embedded" and health["programs"] == ["qa"]

        r = httpx.post(f"{srv['base']}/programs/qa", json={"question": "What is the largest ocean on Earth?"},
                       timeout=120)
        assert r.status_code == 200, r.text
        body = r.json()
        assert isinstance(body["outputs"]["answer"], str) and body["outputs"]["answer"].strip()
        assert body["usage"]["prompt_tokens"] > 50 and body["usage"]["completion_tokens"] > 0

        with httpx.stream("POST", f"{srv['base']}/programs/qa/stream",
                          json={"question": "Name a famous painting by Leonardo da Vinci."}, timeout=120) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            events = sse_events(r)
    assert events and events[-1][0] == "prediction", events[-3:]
    chunks = [d["chunk"] for e, d, _ in events if e == "token"]
    answer = events[-1][1]["outputs"]["answer"]
    assert chunks and "".join(chunks).strip() == answer.strip()  # the answer arrived as the model wrote it


def test_the_logged_model_loads_and_predicts_in_a_fresh_process(tmp_path):
    """Only mlflow.dspy.load_model / mlflow.pyfunc in a new interpreter, outside the repo: the
    pickled LM carries its engine (backend, model, options), whose class imports on unpickling."""
    import subprocess
    import sys

    proc = run_runner(["optimizer=labeled_fewshot", "task=sentiment", "task.splits.n_train=4", "task.splits.n_dev=2",
                       "optimizer.init.k=2"], tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    (logged,) = client.search_logged_models(experiment_ids=[client.get_experiment_by_name("dspy-runner").experiment_id])
    code = f"""
import json, mlflow, mlflow.dspy, mlflow.pyfunc
mlflow.set_tracking_uri("sqlite:///{tmp_path}/mlflow.db")
uri = "models:/{logged.model_id}"
program = mlflow.dspy.load_model(uri)
print(json.dumps(program(text="A wonderful, moving film.").toDict()))
print(json.dumps(mlflow.pyfunc.load_model(uri).predict({{"text": "A dull, lifeless film."}})))
"""
    fresh = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    first, second = [json.loads(line) for line in fresh.stdout.strip().splitlines()[-2:]]
    assert first["sentiment"] in ("positive", "negative") and second["sentiment"] in ("positive", "negative")
    assert "LLM Provider NOT provided" not in fresh.stderr
