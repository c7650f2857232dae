"""`python -m runner` end to end as a user runs it (DummyLM model, real Hydra, real MLflow)."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from conftest import ROOT, SEARCHPATH, run_runner, runner_command


def _runs(tmp_path):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("dspy-runner")
    return client, client.search_runs([exp.experiment_id]) if exp else []


def test_run_compiles_saves_and_logs(tmp_path):
    proc = run_runner([SEARCHPATH, "model=scripted", "optimizer=bootstrap_fewshot", "task=gsm8k",
                       "task.splits.n_train=6", "task.splits.n_dev=4"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, runs = _runs(tmp_path)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    p, m = run.data.params, run.data.metrics
    assert p["optimizer.name"] == "bootstrap_fewshot" and p["task.name"] == "gsm8k"
    assert p["optimizer.init._target_"] == "dspy.BootstrapFewShot" and p["data.n_dev"] == "4"
    for key in ("baseline_score", "compiled_score", "baseline_lm_calls", "compile_lm_calls", "compile_wall_s"):
        assert key in m, key
    assert m["baseline_lm_calls"] == 4 and 0.0 <= m["compiled_score"] <= 1.0
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"hydra", "program_state"} <= artifacts
    hydra_files = {a.path for a in client.list_artifacts(run.info.run_id, "hydra")}
    assert "hydra/config.yaml" in hydra_files and "hydra/overrides.yaml" in hydra_files
    logged = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert logged and logged[0].source_run_id == run.info.run_id
    assert logged[0].name == "gsm8k-bootstrap_fewshot"  # says what it is
    import mlflow.models

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    info = mlflow.models.get_model_info(f"models:/{logged[0].model_id}")
    assert [c.name for c in info.signature.inputs.inputs] == ["question"]
    assert [c.name for c in info.signature.outputs.inputs] == ["answer"]
    assert info.saved_input_example_info is not None
    assert "untrusted .pkl" not in proc.stderr and "serialized using cloudpickle" not in proc.stderr
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    traces = mlflow.search_traces(locations=[run.info.experiment_id], return_type="list", max_results=100)
    ours = [t for t in traces if t.info.request_metadata.get("mlflow.sourceRun") == run.info.run_id]
    assert len(ours) >= 8, "mlflow.dspy.autolog should trace every evaluated example"  # 4 baseline + 4 compiled
    assert any(s.name.endswith("__call__") for s in ours[0].data.spans)  # the LM call is a span
    # each evaluated example's trace carries the metric's score and feedback as an assessment
    judged = [a for t in ours for a in t.info.assessments if a.name in ("baseline_metric", "compiled_metric")]
    assert len(judged) == 8 and all(a.rationale for a in judged) and {a.value for a in judged} <= {0.0, 1.0}

    # reproducibility and per-example results
    tags = run.data.tags
    assert tags["version.dspy"] and tags["version.mlflow"] and "git.commit" in tags and tags["git.dirty"] in ("True", "False")
    assert tags["mlflow.note.content"].startswith("gsm8k x bootstrap_fewshot on ") and " -> " in tags["mlflow.note.content"]
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {"gsm8k-train", "gsm8k-dev", "gsm8k-test"}
    assert "examples.json" in artifacts
    rows = [json.loads(line) for line in (tmp_path / "run" / "examples.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rows] == ["baseline"] * 4 + ["compiled"] * 4
    assert all(r["split"] == "dev" and "input.question" in r and "output.answer" in r and r["feedback"] for r in rows)

    saved = tmp_path / "run" / "program"
    manifest = json.loads((saved / "manifest.json").read_text())
    assert manifest["scores"]["compiled_score"] == pytest.approx(m["compiled_score"])
    assert manifest["seed"] == 0 and manifest["schema_version"] == 1
    assert manifest["versions"]["dspy"] and manifest["git"]["commit"] == tags["git.commit"]
    assert manifest["program"]["_target_"] == "dspy.Predict"
    state = json.loads((saved / "program.json").read_text())
    assert "demos" in json.dumps(state)
    assert "score" in proc.stderr + proc.stdout and "baseline dev" in proc.stderr + proc.stdout


def test_unreachable_endpoint_is_one_line_and_run_failed(tmp_path):
    proc = run_runner(["model=litellm", "model.model=openai/nothing-here", "model.api_base=http://127.0.0.1:9/v1",
                       "model.api_key=sk-THIS-IS-SECRET", "model.num_retries=0", "optimizer=none"], tmp_path)
    assert proc.returncode == 1
    err_lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(err_lines) == 1 and "127.0.0.1:9" in err_lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    _, runs = _runs(tmp_path)
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    params = runs[0].data.params
    assert params["model.api_key"] == "<redacted>"
    assert "sk-THIS-IS-SECRET" not in json.dumps(params)


def test_unknown_config_option_fails_clearly(tmp_path):
    proc = run_runner(["optimizer=does_not_exist"], tmp_path)
    assert proc.returncode != 0
    assert "Could not find 'optimizer/does_not_exist'" in proc.stderr
    assert "bootstrap_fewshot" in proc.stderr  # Hydra lists the available options


def test_malformed_dataset_is_one_line(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"question": "q1", "answer": "a"}\n{"question": "q2"}\n{"question": "q3", "answer": "c"}\n')
    proc = run_runner([SEARCHPATH, "model=scripted", "task=custom", "task.signature=question -> answer",
                       f"task.data={data}", "metric=exact_match"], tmp_path)
    assert proc.returncode == 1
    assert "row 2 is missing field 'answer'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_marks_run_killed_and_keeps_metrics(tmp_path, sig):
    # 8 baseline calls, then 8 compiled calls of 0.5 s each (optimizer=none makes no calls). The LM
    # creates `event` when call 9 -- the first of the compiled evaluation -- starts, so the signal
    # lands after the baseline metrics were logged and about 4 s before the job could end.
    event = tmp_path / "compiled-eval-started"
    cmd, env = runner_command([SEARCHPATH, "model=slow", "model.delay=0.5", f"model.event_file={event}",
                               "model.event_call=9", "optimizer=none", "task.splits.n_dev=8",
                               "eval.num_threads=1", "lm_check=false"], tmp_path)
    log = tmp_path / "job.log"  # a file, not a pipe: the job never blocks on output nobody reads
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    while not event.exists():
        if proc.poll() is not None:
            pytest.fail(f"the job ended before the compiled evaluation started:\n{log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the compiled evaluation did not start within 180 s")
        time.sleep(0.05)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    out = log.read_text()
    assert proc.returncode == 130, out[-2000:]
    _, runs = _runs(tmp_path)
    assert runs[0].info.status == "KILLED"
    assert "baseline_score" in runs[0].data.metrics
    assert "compiled_score" not in runs[0].data.metrics  # interrupted inside the compiled evaluation
    assert "interrupted" in out


def test_an_optimizer_refusing_its_configuration_is_one_line(tmp_path):
    proc = run_runner([SEARCHPATH, "model=scripted", "optimizer=simba", "task=gsm8k", "task.splits.n_train=4",
                       "task.splits.n_dev=2"], tmp_path)
    assert proc.returncode == 1
    err = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "simba refused its configuration" in err[0] and "4 < 8" in err[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    _, runs = _runs(tmp_path)
    assert runs[0].info.status == "FAILED" and "baseline_score" in runs[0].data.metrics  # what was measured stays


def test_identical_runs_keep_their_own_traces(tmp_path):
    """The seed goes to the splits and optimizers explicitly; nothing seeds Python's global random,
    from which OpenTelemetry draws trace ids (identical runs used to overwrite each other's traces)."""
    import mlflow

    args = [SEARCHPATH, "model=scripted", "optimizer=none", "task=gsm8k", "task.splits.n_dev=3", "seed=0"]

    def traces_of(run_id):
        mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
        found = mlflow.search_traces(locations=[exp_id], return_type="list", max_results=500)
        return [t for t in found if t.info.request_metadata.get("mlflow.sourceRun") == run_id]

    assert run_runner(args, tmp_path).returncode == 0
    client, runs = _runs(tmp_path)
    exp_id, first = runs[0].info.experiment_id, runs[0].info.run_id
    before = len(traces_of(first))
    assert before >= 6  # 3 baseline + 3 compiled examples
    assert run_runner(args, tmp_path).returncode == 0
    _, runs = _runs(tmp_path)
    second = next(r.info.run_id for r in runs if r.info.run_id != first)
    assert len(traces_of(first)) == before and len(traces_of(second)) == before


@pytest.mark.parametrize("override, named", [("+model.max_tokens=-5", "model.max_tokens=-5"),
                                             ("eval.num_threads=0", "eval.num_threads=0"),
                                             ("eval.num_threads=-3", "eval.num_threads=-3"),
                                             ("task.splits.n_dev=0", "task.splits.n_dev=0"),
                                             ("optimizer.init.max_bootstrapped_demos=abc", "is not a number")])
def test_invalid_numbers_fail_before_the_run_starts(tmp_path, override, named):
    proc = run_runner([SEARCHPATH, "model=scripted", "task=gsm8k", override], tmp_path)
    err = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1 and len(err) == 1 and named in err[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert _runs(tmp_path)[1] == []  # nothing was started


def test_unreachable_tracking_server_is_one_line_in_seconds(tmp_path):
    t0 = time.monotonic()
    proc = run_runner([SEARCHPATH, "model=scripted", "task=gsm8k", "tracking.tracking_uri=http://127.0.0.1:9"], tmp_path)
    err = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1 and len(err) == 1 and "MLflow tracking server http://127.0.0.1:9" in err[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and time.monotonic() - t0 < 60


@pytest.mark.parametrize("override, named", [("cache.dir=/dev/null/cache", "DSPy cache dir"),
                                             ("tracking.tracking_uri=sqlite:////dev/null/x/mlflow.db", "MLflow store")])
def test_unwritable_dirs_are_one_line(tmp_path, override, named):
    proc = run_runner([SEARCHPATH, "model=scripted", "task=gsm8k", override], tmp_path)
    err = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1 and len(err) == 1 and named in err[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
