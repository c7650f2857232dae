"""The benchmark measures real numbers and writes JSON, a plot and an MLflow run."""

from __future__ import annotations

import json
import os

import pytest
from omegaconf import OmegaConf

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from runner.lm.bandwidth import decode_limit_tps, measure_read_gbs  # noqa: E402
from runner.lm.build import backend_available  # noqa: E402


def test_bandwidth_probe_and_limit():
    gbs = measure_read_gbs(size_mb=32, repeats=2)
    assert 0.1 < gbs < 10_000
    assert decode_limit_tps(10.0, 100_000_000) == pytest.approx(100.0)


@pytest.mark.slow
@pytest.mark.skipif(not backend_available("llamacpp"), reason="llama-cpp-python missing")
def test_bench_runs_llamacpp_and_writes_results(tmp_path):
    from runner.bench import log_mlflow, print_report, run_bench

    cfg = OmegaConf.create({
        "model": "embedded", "backends": ["llamacpp", "nosuchbackend"], "prompt_lengths": [80],
        "decode_tokens": 6, "repeats": 2, "thread_scaling": True, "bandwidth_mb": 32, "per_backend": {}, "options": {"llamacpp": {"n_ctx": 1024}},
        "typical": {"prompt_tokens": 120, "new_tokens": 6, "target_s": 60.0},
        "log_to_mlflow": True, "experiment": "bench-test",
        "tracking": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "artifact_location": str(tmp_path / "art"),
                     "experiment_name": "dspy-runner"},
    })
    import runner.bench as bench
    import runner.lm.build as models

    original = models.backend_available
    try:
        models.backend_available = lambda b: b != "nosuchbackend" and original(b)
        report = run_bench(cfg, tmp_path / "run")
    finally:
        models.backend_available = original
    assert report["skipped"] == {"nosuchbackend": "not installed"}
    (res,) = report["results"]
    run = res["runs"][0]
    assert 60 < run["prompt_tokens"] <= 80 and run["ttft_s"] > 0 and run["prefill_tps"] > 0
    assert res["load_s"] > 0 and res["model_bytes"] > 50_000_000 and res["peak_rss_mb"] > 50
    assert res["decode_limit_tps"] > 0
    assert len(run["decode_tps_samples"]) == 2 and run["decode_tps"] == max(run["decode_tps_samples"])
    scaling = res["thread_scaling"]
    from runner.lm.backends.llamacpp import default_threads

    if default_threads() > 1:  # one-thread decode measured and compared with the all-core run
        assert scaling["decode_tps_1_thread"] > 0 and scaling["speedup"] > 0 and scaling["threads"] > 1
    typical = res["typical_call"]
    assert 60 < typical["prompt_tokens"] <= 130 and typical["warm_s"] > 0 and typical["cold_s"] > 0
    saved = json.loads((tmp_path / "run" / "bench.json").read_text())
    assert saved["results"][0]["backend"] == "llamacpp"
    assert (tmp_path / "run" / "bench.png").stat().st_size > 1000
    print_report(report)
    log_mlflow(report, tmp_path / "run", cfg)
    import mlflow

    runs = mlflow.search_runs(experiment_names=["bench-test"])
    assert len(runs) == 1 and runs["metrics.llamacpp.load_s"].iloc[0] > 0
    if scaling:
        assert runs["metrics.llamacpp.thread_speedup"].iloc[0] > 0
    assert bench  # module imported without side effects
