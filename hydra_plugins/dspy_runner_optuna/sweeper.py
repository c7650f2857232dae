"""Optuna sweeper: each trial is a Hydra job whose return value (the runner's score) is the objective.

The search space is `hydra.sweeper.params` plus any sweep on the command line, in Hydra's sweep
syntax, mapped to Optuna distributions:

    choice(a, b, c)              CategoricalDistribution([a, b, c])
    range(1, 5) / range(0, 1, 0.25)   IntDistribution(1, 4) / FloatDistribution(0, 0.75, step=0.25):
                                 the values Hydra's own range() lists (stop excluded)
    shuffle(range(...))          CategoricalDistribution of the listed values
    interval(0.1, 1.0)           FloatDistribution(0.1, 1.0)
    tag(log, interval(1e-4, 1))  the same with log=True
    tag(int, interval(1, 64))    IntDistribution(1, 64) (tags combine: tag(int, log, interval(1, 64)))

A plain `key=value` on the command line is fixed for every trial; a key given on the command
line replaces the same key in `params`. Trials are asked in batches of
`n_jobs` (Optuna's ask/tell API), launched together through the configured Hydra launcher (basic,
joblib `parallel`, or `ray_cluster`), and told their results; a failed job is a FAIL trial. The
best trial (or the Pareto front for several directions) is written to
<sweep dir>/optimization_results.yaml and logged. Optuna is imported when a sweep starts, not
when Hydra discovers the plugin, so `--help` stays fast.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def _listed(override: Override, transformer=Transformer.encode) -> list:
    return list(override.sweep_iterator(transformer=transformer))


def distribution(override: Override):
    """The Optuna distribution of one sweep override (see the module docstring)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return CategoricalDistribution(_listed(override))
    if override.is_range_sweep():
        values = _listed(override, Transformer.identity)
        if not values:
            raise ValueError(f"{override.input_line}: the range lists no value")
        if all(isinstance(v, int) for v in values) and isinstance(value.step, int):
            return IntDistribution(values[0], values[-1], step=abs(value.step)) if value.step > 0 else \
                IntDistribution(values[-1], values[0], step=-value.step)
        low, high = min(values), max(values)
        return FloatDistribution(low, high, step=abs(value.step)) if len(values) > 1 else CategoricalDistribution(values)
    if override.is_interval_sweep():
        log_scale = "log" in value.tags
        if "int" in value.tags:  # Hydra reads interval() ends as floats
            return IntDistribution(int(value.start), int(value.end), log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise ValueError(f"{override.input_line}: the Optuna sweeper takes choice(), range() and interval() sweeps")


def search_space(arguments: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """({name: distribution} of the sweep overrides, [fixed overrides as given]). A later
    override of the same key wins, so the command line (given last) overrides `params`."""
    space, fixed = {}, {}
    for override in OverridesParser.create().parse_overrides(list(arguments)):
        key = override.get_key_element()
        space.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            space[key] = distribution(override)
        else:
            fixed[key] = override.input_line
    return space, list(fixed.values())


def grid(space: dict[str, Any]) -> dict[str, list]:
    """GridSampler's search space: every value of each (discrete) distribution."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for name, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            out[name] = list(dist.choices)
        elif isinstance(dist, IntDistribution) and not dist.log:
            out[name] = list(range(dist.low, dist.high + 1, dist.step))
        elif isinstance(dist, FloatDistribution) and dist.step is not None:
            n = int(round((dist.high - dist.low) / dist.step)) + 1
            out[name] = [dist.low + i * dist.step for i in range(n)]
        else:
            raise ValueError(f"{name}: GridSampler needs discrete values; use choice() or range(), not interval()")
    return out


def _arg(name: str, value: Any) -> str:
    if value is None:
        return f"{name}=null"
    if isinstance(value, bool):
        return f"{name}={str(value).lower()}"
    return f"{name}={value}"


class OptunaSweeper(Sweeper):
    def __init__(self, direction: Any, study_name: str | None, storage: str | None, n_trials: int, n_jobs: int,
                 max_failure_rate: float, sampler: DictConfig, params: DictConfig | None) -> None:
        directions = list(direction) if isinstance(direction, Sequence) and not isinstance(direction, str) else [direction]
        bad = [d for d in directions if str(d) not in ("maximize", "minimize")]
        if bad or not directions:
            raise ValueError(f"hydra.sweeper.direction must be maximize, minimize or a list of them, not {direction}")
        if n_trials < 1 or n_jobs < 1 or not 0.0 <= max_failure_rate <= 1.0:
            raise ValueError("hydra.sweeper: n_trials and n_jobs must be >= 1, max_failure_rate in [0, 1]")
        self.directions = [str(d) for d in directions]
        self.study_name, self.storage = study_name, storage
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, n_jobs, max_failure_rate
        self.sampler_cfg, self.params = sampler, params
        self.config: DictConfig | None = None
        self.launcher = None
        self.hydra_context: HydraContext | None = None
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.job_idx = config, hydra_context, 0
        self.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context,
                                                               task_function=task_function)

    def _sampler(self, space: dict[str, Any]):
        from hydra.utils import get_class, instantiate
        from optuna.samplers import GridSampler

        cfg = OmegaConf.to_container(self.sampler_cfg, resolve=True) if self.sampler_cfg is not None else {}
        if not cfg:
            return None, None
        if issubclass(get_class(cfg["_target_"]), GridSampler):
            values = grid(space)
            cfg.setdefault("search_space", values)
            return instantiate(cfg, _convert_="all"), math.prod(len(v) for v in values.values())
        return instantiate(cfg, _convert_="all"), None

    def sweep(self, arguments: list[str]) -> Any:
        import optuna

        assert self.config is not None and self.launcher is not None
        from_config = [f"{k}={v}" for k, v in (self.params or {}).items()]
        space, fixed = search_space(from_config + list(arguments))
        if not space:
            raise ValueError("the Optuna sweeper has nothing to search: set hydra.sweeper.params or sweep a key "
                             "on the command line (key=choice(a,b), key=range(1,5), key=interval(0,1))")
        sampler, grid_size = self._sampler(space)
        n_trials = min(self.n_trials, grid_size) if grid_size else self.n_trials
        study = optuna.create_study(study_name=self.study_name, storage=self.storage, sampler=sampler,
                                    directions=self.directions, load_if_exists=True)
        log.info("Optuna study %s (%s, %s): %d trials, search space %s", study.study_name,
                 type(study.sampler).__name__, "/".join(self.directions), n_trials,
                 {k: repr(v) for k, v in space.items()})
        done = 0
        while done < n_trials:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, n_trials - done))]
            batch = [tuple(fixed + [_arg(k, v) for k, v in t.params.items()]) for t in trials]
            self.validate_batch_is_legal(batch)
            returns = self.launcher.launch(batch, initial_job_idx=self.job_idx)
            self.job_idx += len(returns)
            failures = [self._tell(study, trial, ret) for trial, ret in zip(trials, returns)]
            failures = [f for f in failures if f is not None]
            if failures and len(failures) / len(returns) > self.max_failure_rate:
                log.error("%d of %d trials in the batch failed (max_failure_rate=%s)", len(failures), len(returns),
                          self.max_failure_rate)
                for ret in returns:
                    ret.return_value  # re-raises the first failed job's own exception
            done += len(trials)
        return self._save_results(study)

    @staticmethod
    def _told(study, trial, *args, **kwargs) -> None:
        """study.tell, where a GridSampler's documented RuntimeError after the last grid point (it
        calls Study.stop, which only works inside study.optimize; optuna#5141) just means that the
        grid is done: the trial is stored before the sampler raises."""
        from optuna.samplers import GridSampler

        try:
            study.tell(trial, *args, **kwargs)
        except RuntimeError as exc:
            if not (isinstance(study.sampler, GridSampler) and "Study.stop" in str(exc)):
                raise

    def _tell(self, study, trial, ret) -> Exception | None:
        import optuna

        try:
            value = ret.return_value
            values = [float(v) for v in value] if len(self.directions) > 1 else [float(value)]
            if len(values) != len(self.directions) or any(math.isnan(v) for v in values):
                raise ValueError(f"the job returned {value!r}; the study expects {len(self.directions)} number(s)")
        except Exception as exc:  # noqa: BLE001 -- a failed job (its exception) or an unusable return value
            self._told(study, trial, state=optuna.trial.TrialState.FAIL)
            log.warning("trial %d failed: %s", trial.number, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return exc
        self._told(study, trial, values if len(values) > 1 else values[0])
        return None

    def _save_results(self, study) -> dict:
        if len(self.directions) == 1:
            try:
                best = study.best_trial
            except ValueError:
                results = {"name": "optuna", "study": study.study_name, "best_params": None, "best_value": None}
            else:
                results = {"name": "optuna", "study": study.study_name, "best_params": best.params,
                           "best_value": best.value, "best_trial": best.number}
                log.info("Best value %s with %s (trial %d)", best.value, best.params, best.number)
        else:
            front = [{"params": t.params, "values": t.values, "trial": t.number} for t in study.best_trials]
            results = {"name": "optuna", "study": study.study_name, "solutions": front}
            log.info("Pareto front: %d trials", len(front))
        out = Path(str(self.config.hydra.sweep.dir))
        out.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results), out / "optimization_results.yaml")
        return results
