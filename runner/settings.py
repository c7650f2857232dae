"""Where things live, in one place for every command.

* `CONF_DIR`: the Hydra config tree, the `conf` package installed with the runner (so a
  non-editable install has its configs too).
* The MLflow store: what `conf/tracking/mlflow.yaml` says (`MLFLOW_TRACKING_URI`, else
  `outputs/mlflow.db` under the directory a command runs from). The Hydra commands (run, serve,
  bench) compose it as part of their config; the argparse commands (promote, report, diff) read
  the same node with `tracking_config()`.
* The DSPy cache: `configure_cache`, the `_target_` of the `cache` node of the run and serve configs.
"""

from __future__ import annotations

from pathlib import Path

import conf as _conf

from runner.errors import RunnerError

CONF_DIR = str(Path(_conf.__file__).resolve().parent)


def tracking_config(tracking_uri: str | None = None):
    """The resolved `tracking` node of the run config, with `tracking_uri` replaced when given.
    For commands outside a Hydra app (composing initialises Hydra's global state)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        node = OmegaConf.create(OmegaConf.to_container(cfg.tracking, resolve=True))
    if tracking_uri:
        with open_dict(node):
            node.tracking_uri = tracking_uri
    return node


def tracking_uri(explicit: str | None = None) -> str:
    """`explicit`, else the store the run config names."""
    return explicit or tracking_config().tracking_uri


def configure_cache(enabled: bool, dir: str) -> str:
    """DSPy's disk + memory cache in `dir` (both off when not `enabled`); returns the dir."""
    import dspy

    try:
        Path(dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunnerError(f"cannot create the DSPy cache dir {dir}: {exc}",
                          "set cache.dir (or DSPY_RUNNER_CACHE) to a writable directory, or cache.enabled=false") from exc
    dspy.configure_cache(enable_disk_cache=enabled, enable_memory_cache=enabled, disk_cache_dir=str(dir))
    return str(dir)
