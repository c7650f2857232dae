"""Hydra entrypoint: `python -m runner [group=option ...]`.

Returns the dev score so Hydra sweepers (Optuna) can optimise it.
"""

from __future__ import annotations

import signal
import threading

import hydra
from omegaconf import DictConfig

from runner.errors import RunnerError, exit_with, find_user_error
from runner.settings import CONF_DIR


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from runner.job.pipeline import run  # heavy imports only once a job really runs

    if threading.current_thread() is threading.main_thread():
        # `kill` / a scheduler's SIGTERM ends the job like Ctrl-C: the MLflow run is closed as KILLED
        signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return run(cfg)
    except KeyboardInterrupt:
        exit_with(RunnerError("interrupted", "the MLflow run was marked KILLED; partial results are kept"), 130)
    except Exception as exc:
        user_error = find_user_error(exc)
        if user_error is None:
            raise  # a bug: let Hydra show the traceback
        exit_with(user_error)
