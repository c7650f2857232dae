"""Shared fixtures: Hydra composition of the real conf/ tree, plus a test-only model option."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(args, tmp: Path, startup_s: float = 90):
    """Start `python -m runner.serve ARGS` on a free loopback port; yield {base, log} once /health answers."""
    import httpx

    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    log_file = tmp / "server.log"
    cmd = [sys.executable, "-m", "runner.serve", f"port={port}", f"hydra.run.dir={tmp}/hydra",
           f"paths.cache_dir={tmp}/cache", *args]
    with open(log_file, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/m.db"})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + startup_s
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited: {log_file.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server did not start: {log_file.read_text()[-2000:]}")
            time.sleep(0.3)
        yield {"base": base, "log": log_file}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def sse_events(response) -> list[tuple[str, dict, float]]:
    """(event, data, arrival time) for each SSE message of an httpx streaming response."""
    events, event = [], None
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            events.append((event, json.loads(line[6:]), time.monotonic()))
    return events
