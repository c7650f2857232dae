"""The runner's Hydra config tree. A package only so that it ships with the runner
(`pip install .`); runner.settings.CONF_DIR points Hydra at it."""
