"""The `hydra/launcher: ray` config node (registered in Hydra's ConfigStore on plugin discovery).

    hydra:
      launcher:
        ray:
          init:                     # keyword arguments of ray.init
            address: null           # null: RAY_ADDRESS if set, else a new local Ray instance
            include_dashboard: false
          remote:                   # ray.remote options of every job: its resources
            num_cpus: 1
            num_gpus: 0
            max_retries: 0
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class RayConf:
    init: dict[str, Any] = field(default_factory=lambda: {"address": None, "include_dashboard": False})
    remote: dict[str, Any] = field(default_factory=lambda: {"num_cpus": 1, "num_gpus": 0, "max_retries": 0})


@dataclass
class RayLauncherConf:
    _target_: str = "hydra_plugins.dspy_runner_ray.launcher.RayLauncher"
    ray: RayConf = field(default_factory=RayConf)


ConfigStore.instance().store(group="hydra/launcher", name="ray", node=RayLauncherConf, provider="dspy-runner")
