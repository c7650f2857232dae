"""dspy-runner's Optuna sweeper for Hydra: `hydra/sweeper=optuna` (conf/hparams_search/ presets).

It replaces hydra-optuna-sweeper, whose latest release (1.3.0) pins optuna<3 while DSPy's
MIPROv2 needs optuna>=3.4. It is built on Hydra's public Sweeper API and Optuna's ask/tell API.
"""
