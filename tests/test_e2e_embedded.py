"""The real thing: `python -m runner` on the embedded SmolLM2-135M model (llama.cpp on this CPU)."""

from __future__ import annotations

import json

import pytest

from conftest import run_runner

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
