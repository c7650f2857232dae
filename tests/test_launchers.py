"""Sweeps through Hydra launchers as `multirun.sh` uses them: joblib worker processes
(`hydra/launcher=parallel`) and a local Ray instance (`hydra/launcher=ray_cluster`)."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from conftest import ROOT, SEARCHPATH, runner_command


def _sweep(tmp_path, launcher: str):
    cmd, env = runner_command([SEARCHPATH, f"hydra/launcher={launcher}", "model=scripted", "task=gsm8k",
                               "optimizer=none,labeled_fewshot", "task.splits.n_train=4", "task.splits.n_dev=3",
                               "--multirun"], tmp_path)
    env.pop("RAY_ADDRESS", None)  # the ray_cluster option starts a local Ray instance without it
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _check_two_jobs(tmp_path, proc, launcher_target: str) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("dspy-runner").experiment_id])
    assert sorted(r.data.params["optimizer.name"] for r in runs) == ["labeled_fewshot", "none"]
    assert all(r.info.status == "FINISHED" and "compiled_score" in r.data.metrics for r in runs)
    sweep = yaml.safe_load((tmp_path / "multirun" / "multirun.yaml").read_text())
    assert sweep["hydra"]["launcher"]["_target_"] == launcher_target
    manifests = sorted((tmp_path / "multirun").glob("*/program/manifest.json"))
    assert len(manifests) == 2


def test_joblib_launcher_runs_jobs_in_worker_processes(tmp_path):
    proc = _sweep(tmp_path, "parallel")
    _check_two_jobs(tmp_path, proc, "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher")


def test_ray_launcher_on_a_local_ray_instance(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="needs the Ray launcher: `make setup` installs it")
    proc = _sweep(tmp_path, "ray_cluster")
    _check_two_jobs(tmp_path, proc, "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher")
    out = proc.stdout + proc.stderr
    assert "Started a local Ray instance" in out and "(_run_job pid=" in out  # jobs ran as Ray tasks
