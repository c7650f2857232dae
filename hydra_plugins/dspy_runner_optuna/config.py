"""The `hydra/sweeper: optuna` config node (registered in Hydra's ConfigStore on plugin discovery).

    hydra:
      sweeper:
        direction: maximize          # or minimize, or a list of them for several objectives
        study_name: null             # with storage: resume/extend that study
        storage: null                # e.g. sqlite:///outputs/optuna.db
        n_trials: 20
        n_jobs: 1                    # trials asked per batch; the launcher may run a batch in parallel
        max_failure_rate: 0.0        # share of failed trials in a batch before the sweep stops
        sampler:                     # any optuna.samplers class; GridSampler gets the grid from params
          _target_: optuna.samplers.TPESampler
          seed: 0
        params:                      # Hydra sweep syntax: choice(), range(), interval(), tag(log, ...)
          optimizer.init.max_bootstrapped_demos: range(1, 5)

The sampler is built by the sweeper, not by Hydra's recursive instantiation (`_recursive_: false`),
because a GridSampler needs the search space that only `params` and the command line define.
"""

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.dspy_runner_optuna.sweeper.OptunaSweeper"
    _recursive_: bool = False
    direction: Any = "maximize"
    study_name: Optional[str] = None
    storage: Optional[str] = None
    n_trials: int = 20
    n_jobs: int = 1
    max_failure_rate: float = 0.0
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": None})
    params: Optional[Any] = None


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="dspy-runner")
