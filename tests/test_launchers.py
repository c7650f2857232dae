"""Sweeps through the project's own Hydra plugins (hydra_plugins/), as `multirun.sh` and the
hparams_search presets use them: joblib worker processes (`hydra/launcher=parallel`), a local
Ray instance (`hydra/launcher=ray_cluster`) and the Optuna sweeper (`hparams_search=...`)."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from conftest import ROOT, SEARCHPATH, runner_command


def _run(tmp_path, args):
    cmd, env = runner_command([SEARCHPATH, "model=scripted", "task=gsm8k", "task.splits.n_train=4",
                               "task.splits.n_dev=3", *args], tmp_path)
    env.pop("RAY_ADDRESS", None)  # the ray_cluster option starts a local Ray instance without it
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _runs(tmp_path):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    return client.search_runs([client.get_experiment_by_name("dspy-runner").experiment_id])


def _check_two_jobs(tmp_path, proc, launcher_target: str) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = _runs(tmp_path)
    assert sorted(r.data.params["optimizer.name"] for r in runs) == ["labeled_fewshot", "none"]
    assert all(r.info.status == "FINISHED" and "compiled_score" in r.data.metrics for r in runs)
    sweep = yaml.safe_load((tmp_path / "multirun" / "multirun.yaml").read_text())
    assert sweep["hydra"]["launcher"]["_target_"] == launcher_target
    manifests = sorted((tmp_path / "multirun").glob("*/program/manifest.json"))
    assert len(manifests) == 2


def test_joblib_launcher_runs_jobs_in_worker_processes(tmp_path):
    proc = _run(tmp_path, ["hydra/launcher=parallel", "optimizer=none,labeled_fewshot", "--multirun"])
    _check_two_jobs(tmp_path, proc, "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher")


def test_ray_launcher_on_a_local_ray_instance(tmp_path):
    pytest.importorskip("ray", reason="needs Ray: `make setup` installs the ray extra")
    proc = _run(tmp_path, ["hydra/launcher=ray_cluster", "optimizer=none,labeled_fewshot", "--multirun"])
    _check_two_jobs(tmp_path, proc, "hydra_plugins.dspy_runner_ray.launcher.RayLauncher")
    out = proc.stdout + proc.stderr
    assert "Started a local Ray instance" in out and "(run_hydra_job pid=" in out  # jobs ran as Ray tasks
    job_ids = {yaml.safe_load(p.read_text())["hydra"]["job"]["id"]
               for p in (tmp_path / "multirun").glob("*/.hydra/hydra.yaml")}
    assert len(job_ids) == 2 and all(len(i) > 16 for i in job_ids)  # Ray task ids, one per job


def test_optuna_grid_sweep_tries_every_combination_once(tmp_path):
    proc = _run(tmp_path, ["hparams_search=grid_fewshot", "hydra.sweeper.sampler.seed=0"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = _runs(tmp_path)
    tried = sorted((r.data.params["optimizer.init.k"], r.data.params["choice.adapter"]) for r in runs)
    assert tried == sorted((k, a) for k in ("2", "4", "8") for a in ("structured", "json"))
    results = yaml.safe_load((tmp_path / "multirun" / "optimization_results.yaml").read_text())
    best = max(r.data.metrics["compiled_score"] for r in runs)
    assert results["best_value"] == pytest.approx(best)
    assert set(results["best_params"]) == {"optimizer.init.k", "adapter"}


def test_optuna_tpe_sweep_with_a_command_line_space_and_storage(tmp_path):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    # the preset sweeps max_bootstrapped_demos over range(1,5) and max_labeled_demos over range(0,5):
    # the command line narrows the one and fixes the other
    args = ["hparams_search=optuna_bootstrap", "hydra.sweeper.n_trials=3",
            f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=t",
            "optimizer.init.max_bootstrapped_demos=range(1,3)", "optimizer.init.max_labeled_demos=2"]
    proc = _run(tmp_path, args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = _runs(tmp_path)
    assert len(runs) == 3
    assert {r.data.params["optimizer.init.max_bootstrapped_demos"] for r in runs} <= {"1", "2"}
    assert {r.data.params["optimizer.init.max_labeled_demos"] for r in runs} == {"2"}
    import optuna

    study = optuna.load_study(study_name="t", storage=storage)
    assert len(study.trials) == 3 and all(t.state.name == "COMPLETE" for t in study.trials)
    # a second sweep with the same storage and name extends the study
    proc = _run(tmp_path, args + ["hydra.sweeper.n_trials=1", f"hydra.sweep.dir={tmp_path}/multirun2"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(optuna.load_study(study_name="t", storage=storage).trials) == 4


def test_search_space_maps_hydra_sweeps_to_optuna_distributions():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from hydra_plugins.dspy_runner_optuna.sweeper import grid, search_space

    space, fixed = search_space(["a=choice(x,y)", "b=range(1,5)", "c=range(0,1,0.25)", "d=interval(0.1,1.0)",
                                 "e=tag(log,interval(1e-4,1.0))", "f=tag(int,interval(1,8))", "h=tag(int,log,interval(1,64))", "g=3"])
    assert space["a"] == CategoricalDistribution(["x", "y"])
    assert space["b"] == IntDistribution(1, 4)  # Hydra's range() excludes the stop, as Python's does
    assert space["c"] == FloatDistribution(0.0, 0.75, step=0.25)
    assert space["d"] == FloatDistribution(0.1, 1.0)
    assert space["e"] == FloatDistribution(1e-4, 1.0, log=True)
    assert space["f"] == IntDistribution(1, 8) and space["h"] == IntDistribution(1, 64, log=True)
    assert fixed == ["g=3"]
    assert grid({k: space[k] for k in "abc"}) == {"a": ["x", "y"], "b": [1, 2, 3, 4], "c": [0.0, 0.25, 0.5, 0.75]}
    with pytest.raises(ValueError, match="GridSampler needs discrete values"):
        grid({"d": space["d"]})
    later, fixed_later = search_space(["a=choice(x,y)", "b=range(1,5)", "a=7", "b=choice(1,2)"])  # later wins
    assert later == {"b": CategoricalDistribution([1, 2])} and fixed_later == ["a=7"]

