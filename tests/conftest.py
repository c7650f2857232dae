"""Shared fixtures: Hydra composition of the real conf/ tree, plus a test-only model option."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
TEST_CONF = ROOT / "tests" / "conf"
SEARCHPATH = f"hydra.searchpath=[file://{TEST_CONF}]"


@pytest.fixture
def compose():
    """compose(overrides) -> the composed config, with the hydra node resolved for this job."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.global_hydra import GlobalHydra

    contexts = []

    def _compose(overrides=(), return_hydra_config=False):
        GlobalHydra.instance().clear()
        ctx = initialize_config_dir(config_dir=str(CONF), version_base="1.3")
        ctx.__enter__()
        contexts.append(ctx)
        cfg = hydra_compose("config", overrides=[SEARCHPATH, *overrides], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        if not return_hydra_config:
            from omegaconf import open_dict

            with open_dict(cfg):
                cfg.pop("hydra")
        return cfg

    yield _compose
    for ctx in reversed(contexts):
        ctx.__exit__(None, None, None)
    GlobalHydra.instance().clear()


def runner_command(args, tmp_path: Path, env: dict | None = None) -> tuple[list[str], dict]:
    """The `python -m runner` command line and environment that keep outputs and MLflow in tmp_path."""
    full_env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
                "DSPY_RUNNER_CACHE": str(tmp_path / "cache"), **(env or {})}
    cmd = [sys.executable, "-m", "runner", f"hydra.run.dir={tmp_path}/run", f"hydra.sweep.dir={tmp_path}/multirun",
           f"tracking.artifact_location={tmp_path}/mlartifacts", *args]
    return cmd, full_env


def run_runner(args, tmp_path: Path, env: dict | None = None, timeout: int = 600):
    """Run `python -m runner` as a user would, with outputs and MLflow inside tmp_path."""
    cmd, full_env = runner_command(args, tmp_path, env)
    return subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)
