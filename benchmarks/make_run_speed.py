"""Benchmark: the `make run` job with structured generation vs the previous defaults, side by side.

    python benchmarks/make_run_speed.py [extra hydra overrides...]

Runs the default job (`python -m runner`: task=lora, optimizer=bootstrap_fewshot, the embedded
model) twice as fresh processes with DSPy's cache off, against one MLflow store created first
(so neither run pays for creating it):

  before  adapter=lenient eval=parallel eval.num_threads=2 -- the defaults before structured
          generation: ChatAdapter-format prompts, free decoding with stop strings, two
          evaluation threads;
  after   the defaults now: adapter=structured (the signature's schema enforced by llama.cpp's
          grammar engine), one evaluation thread for the in-process model.

Prints wall time, the time of each phase, dev scores, LM calls, completion tokens and the
before/after ratios. Nothing else may run a model on this machine meanwhile.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIDES = {
    "before": ["adapter=lenient", "eval=parallel", "eval.num_threads=2"],
    "after": [],
}
PHASES = ("baseline", "compile", "compiled")


def main(argv: list[str]) -> int:
    from rich.console import Console
    from rich.table import Table

    with tempfile.TemporaryDirectory(prefix="make-run-bench-") as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "DSPY_RUNNER_CACHE": f"{tmp}/cache"}
        import mlflow

        mlflow.MlflowClient(tracking_uri=uri).search_experiments()  # creates the store's tables now
        walls, runs = {}, {}
        for side, overrides in SIDES.items():
            cmd = [sys.executable, "-m", "runner", "cache.enabled=false", f"hydra.run.dir={tmp}/{side}",
                   f"tracking.artifact_location={tmp}/art", f"tracking.run_name={side}", *overrides, *argv]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            walls[side] = time.perf_counter() - t0
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                return proc.returncode
        client = mlflow.MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name("dspy-runner")
        for run in client.search_runs([exp.experiment_id]):
            runs[run.info.run_name] = run.data.metrics

    table = Table(title="make run job (task=lora, optimizer=bootstrap_fewshot, embedded model, cache off)")
    for col in ("side", "wall s", *(f"{p} s" for p in PHASES), "baseline dev", "compiled dev", "LM calls",
                "completion tok"):
        table.add_column(col, justify="right")
    for side in SIDES:
        m = runs[side]
        table.add_row(side, f"{walls[side]:.1f}", *(f"{m[f'{p}_wall_s']:.1f}" for p in PHASES),
                      f"{m['baseline_score']:.3f}", f"{m['compiled_score']:.3f}",
                      f"{sum(m[f'{p}_lm_calls'] for p in PHASES):.0f}",
                      f"{sum(m[f'{p}_completion_tokens'] for p in PHASES):.0f}")
    console = Console(width=120)
    console.print(table)
    b, a = runs["before"], runs["after"]
    phases_before = sum(b[f"{p}_wall_s"] for p in PHASES)
    phases_after = sum(a[f"{p}_wall_s"] for p in PHASES)
    console.print(f"whole job {walls['before'] / walls['after']:.2f}x faster; its three phases "
                  f"{phases_before / phases_after:.2f}x faster; completion tokens "
                  f"{sum(b[f'{p}_completion_tokens'] for p in PHASES) / sum(a[f'{p}_completion_tokens'] for p in PHASES):.1f}x fewer")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
