"""Benchmark: the same job twice against one DSPy disk cache; prints the speed-up ratio.

    python benchmarks/cache_speedup.py [hydra overrides...]

Both runs are real `python -m runner` processes (the second one is a fresh process, so only
the on-disk cache can help it). Reports wall time, LM calls and cache hits of each run from
MLflow, and the cold/warm ratio measured in this one invocation.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ["optimizer=bootstrap_fewshot", "task=gsm8k", "task.splits.n_train=8", "task.splits.n_dev=8",
           "model.max_tokens=128"]


def main(argv: list[str]) -> int:
    from rich.console import Console
    from rich.table import Table

    overrides = argv or DEFAULT
    with tempfile.TemporaryDirectory(prefix="cache-bench-") as tmp:
        env = {**os.environ, "DSPY_RUNNER_CACHE": f"{tmp}/cache", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
        walls = []
        for i in (1, 2):
            cmd = [sys.executable, "-m", "runner", *overrides, f"hydra.run.dir={tmp}/run{i}",
                   f"tracking.artifact_location={tmp}/art", "tracking.log_model=false"]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            walls.append(time.perf_counter() - t0)
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                return proc.returncode
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
        exp = client.get_experiment_by_name("dspy-runner")
        runs = sorted(client.search_runs([exp.experiment_id]), key=lambda r: r.info.start_time)
    table = Table(title="DSPy disk cache: same job twice (" + " ".join(overrides) + ")")
    for col in ("run", "wall s", "LM calls", "cache hits", "compiled dev score"):
        table.add_column(col, justify="right")
    for name, wall, run in zip(("cold", "warm"), walls, runs):
        m = run.data.metrics
        calls = sum(v for k, v in m.items() if k.endswith("_lm_calls"))
        hits = sum(v for k, v in m.items() if k.endswith("_cache_hits"))
        table.add_row(name, f"{wall:.1f}", f"{calls:.0f}", f"{hits:.0f}", f"{m.get('compiled_score', 0):.3f}")
    console = Console()
    console.print(table)
    same = runs[0].data.metrics.get("compiled_score") == runs[1].data.metrics.get("compiled_score")
    console.print(f"speed-up cold/warm = {walls[0] / walls[1]:.1f}x  (process start-up included; identical scores: {same})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
