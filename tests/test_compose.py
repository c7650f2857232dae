"""Every option of every config group composes; cheap ones also instantiate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import CONF, ROOT


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["model", "program", "adapter", "task", "metric", "optimizer", "tracking",
                                   "experiment", "hparams_search", "debug"])
def test_every_option_composes(compose, group):
    options = _options(group)
    assert options, f"conf/{group} is empty"
    for option in options:
        extra = ["task.signature='question -> answer'", "task.data=x.jsonl"] if option == "custom" else []
        cfg = compose([f"{group}={option}", *extra], return_hydra_config=True)
        assert cfg.hydra.runtime.choices[group] == option
        # everything outside the hydra node resolves (no dangling interpolation)
        OmegaConf.to_container(cfg.model, resolve=True)
        OmegaConf.to_container(cfg.optimizer, resolve=True)


@pytest.mark.parametrize("option", _options("adapter"))
def test_adapters_instantiate(compose, option):
    import dspy

    assert isinstance(instantiate(compose([f"adapter={option}"]).adapter), dspy.Adapter)


@pytest.mark.parametrize("option", [o for o in _options("model") if o not in ("litellm", "server")])
def test_local_model_options_target_local_providers(compose, option):
    cfg = compose([f"model={option}"])
    target = cfg.model._target_
    assert target in ("runner.lm.build.build_lm", "runner.lm.build.auto_lm")
    if target == "runner.lm.build.build_lm":
        assert cfg.model.model.split("/")[0] in ("llamacpp", "mlx", "torch")


def test_cli_cfg_job_and_defaults_tree_are_fast_and_right():
    out = subprocess.run([sys.executable, "-m", "runner", "--cfg", "job", "optimizer=gepa", "task=lora"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    job = OmegaConf.create(out.stdout)
    assert job.optimizer.init._target_ == "dspy.GEPA" and job.task.name == "lora"
    tree = subprocess.run([sys.executable, "-m", "runner", "--info", "defaults-tree", "experiment=gsm8k_mipro"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert tree.returncode == 0 and "optimizer: mipro_v2" in tree.stdout


def test_cfg_job_does_not_import_heavy_libraries():
    code = ("import sys, runpy; sys.argv=['runner','--cfg','job'];\n"
            "try:\n runpy.run_module('runner', run_name='__main__')\nexcept SystemExit: pass\n"
            "heavy=[m for m in ('mlflow','dspy','llama_cpp','mlx','torch','litellm') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in out.stdout, out.stdout[-500:] + out.stderr[-2000:]


@pytest.mark.parametrize("optimizer", ["none", "labeled_fewshot", "bootstrap_fewshot", "bootstrap_random_search",
                                       "mipro_v2", "gepa", "copro", "simba", "knn_fewshot"])
def test_shipped_configs_pass_the_number_checks(compose, optimizer):
    from runner.job.pipeline import check_numbers

    for task in ("lora", "architecture", "sentiment", "gsm8k"):
        check_numbers(compose([f"optimizer={optimizer}", f"task={task}"]))


def test_settings_name_the_conf_package_and_the_configured_store(tmp_path, monkeypatch):
    import conf
    from runner import settings

    assert Path(settings.CONF_DIR) == Path(conf.__file__).resolve().parent and (Path(settings.CONF_DIR) / "config.yaml").is_file()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    node = settings.tracking_config()
    assert node.tracking_uri == f"sqlite:///{tmp_path}/outputs/mlflow.db"
    assert node.artifact_location == f"{tmp_path}/outputs/mlartifacts"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/m.db")
    assert settings.tracking_uri() == "sqlite:////elsewhere/m.db" and settings.tracking_uri("http://x:5000") == "http://x:5000"


def test_every_command_is_a_console_script():
    import importlib
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"dspy-runner", "dspy-runner-serve", "dspy-runner-bench", "dspy-runner-report",
                            "dspy-runner-diff", "dspy-runner-promote", "dspy-runner-validate"}
    for target in scripts.values():
        module, _, attr = target.partition(":")
        assert callable(getattr(importlib.import_module(module), attr))
