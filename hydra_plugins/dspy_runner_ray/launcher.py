"""Ray launcher: every job of a sweep is a Ray task, with the resources of `ray.remote`.

`ray.init(**ray.init)` joins the cluster at `address` (or RAY_ADDRESS, Ray's own variable) or
starts a local instance; a Ray already initialised in this process is reused. Each job composes
its config here (so a bad override fails before anything is submitted), then runs in a Ray
worker through Hydra's `run_job` with this process's Hydra state, as the basic launcher would
run it locally: same job dirs, same `.hydra/` files, same return value. Ray is imported only
when a sweep launches, not when Hydra discovers the plugin.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


def run_hydra_job(hydra_context: HydraContext, sweep_config: DictConfig, task_function: TaskFunction,
                  singleton_state: dict[Any, Any]) -> JobReturn:
    """The body of a job's Ray task (also the name Ray prefixes to its output lines)."""
    import ray

    setup_globals()
    Singleton.set_state(singleton_state)
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = ray.get_runtime_context().get_task_id()
    HydraConfig.instance().set_config(sweep_config)
    return run_job(hydra_context=hydra_context, task_function=task_function, config=sweep_config,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")


class RayLauncher(Launcher):
    def __init__(self, ray: DictConfig) -> None:
        self.ray_cfg = ray
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def _init(self) -> None:
        import ray

        if ray.is_initialized():
            log.info("Ray is already initialised in this process: reusing it")
            return
        kwargs = {k: v for k, v in (OmegaConf.to_container(self.ray_cfg.init, resolve=True) or {}).items()
                  if v is not None}
        ray.init(**kwargs)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import ray

        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        self._init()
        options = {k: v for k, v in (OmegaConf.to_container(self.ray_cfg.remote, resolve=True) or {}).items()
                   if v is not None}
        task = ray.remote(**options)(run_hydra_job) if options else ray.remote(run_hydra_job)
        log.info("Ray launcher: %d jobs (%s each), sweep output dir: %s", len(job_overrides), options or "defaults",
                 sweep_dir)
        pending = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.num = idx
            pending.append(task.remote(self.hydra_context, sweep_config, self.task_function, Singleton.get_state()))
        return ray.get(pending)
