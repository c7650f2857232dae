"""runner.diff and runner.report on run dirs laid out as the pipeline writes them, plus MLflow runs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT


def _job(dir_, task, optimizer, compiled, baseline, k=4, finished=True, test=None, parse_failures=0):
    """A job dir: .hydra/{config,hydra}.yaml and (if finished) program/manifest.json; `test` =
    (baseline, compiled) on the held-out split for an optimizer that selected on dev."""
    (dir_ / ".hydra").mkdir(parents=True)
    config = {"seed": 0, "task": {"name": task, "signature": "question -> answer"},
              "optimizer": {"name": optimizer, "valset": test is not None,
                            "init": {"_target_": f"dspy.{optimizer}", "k": k}},
              "paths": {"root": "${hydra:runtime.cwd}"}}
    (dir_ / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (dir_ / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(
        {"hydra": {"runtime": {"cwd": "/somewhere", "choices": {"task": task, "optimizer": optimizer}}}}))
    if finished:
        (dir_ / "program").mkdir()
        resolved = {**config, "paths": {"root": "/somewhere"}}
        scores = {"baseline_score": baseline, "compiled_score": compiled, "improvement": compiled - baseline}
        evaluated = {"baseline": {"split": "dev", "n": 4, "parse_failures": parse_failures},
                     "compiled": {"split": "dev", "n": 4, "parse_failures": 0}}
        if test is not None:
            scores.update(baseline_test_score=test[0], compiled_test_score=test[1])
            evaluated.update(baseline_test={"split": "test", "n": 8, "parse_failures": 0},
                             compiled_test={"split": "test", "n": 8, "parse_failures": 0})
        (dir_ / "program" / "manifest.json").write_text(json.dumps(
            {"schema_version": 1, "config": resolved, "task": {"name": task}, "scores": scores,
             "evaluated": evaluated}))
    return dir_


def test_diff_run_dirs_markdown(tmp_path):
    from runner.diff import load, markdown

    a = _job(tmp_path / "a", "gsm8k", "LabeledFewShot", 0.5, 0.25, k=4)
    b = _job(tmp_path / "b", "gsm8k", "LabeledFewShot", 0.75, 0.25, k=8)
    md = markdown(load(str(a)), load(str(b)))
    assert "### Config (1 changed)" in md
    assert "| `optimizer.init.k` | `4` | `8` |" in md
    assert "| `compiled_score` | 0.5 | 0.75 | **+0.25** |" in md
    assert "| `baseline_score` | 0.25 | 0.25 | +0 |" in md


def test_diff_dir_against_mlflow_run_id(tmp_path, monkeypatch):
    import mlflow

    from runner.tracking import flatten

    uri = f"sqlite:///{tmp_path}/m.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    a = _job(tmp_path / "a", "gsm8k", "LabeledFewShot", 0.5, 0.25, k=4)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("diff-test")  # not an experiment id left active by an earlier test's store
    config = json.loads((a / "program" / "manifest.json").read_text())["config"]
    config["seed"] = 7
    with mlflow.start_run() as run:
        mlflow.log_params(flatten(config))
        mlflow.log_metrics({"compiled_score": 0.25, "compile_wall_s": 3.0})
    res = subprocess.run([sys.executable, "-m", "runner.diff", str(a), run.info.run_id, "-o", str(tmp_path / "d.md")],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "| `seed` | `0` | `7` |" in res.stdout
    assert "| `compiled_score` | 0.5 | 0.25 | **-0.25** |" in res.stdout
    assert "| `compile_wall_s` | — | 3 | — |" in res.stdout
    assert (tmp_path / "d.md").read_text() == res.stdout


def test_diff_unknown_run_is_one_line_error(tmp_path):
    res = subprocess.run([sys.executable, "-m", "runner.diff", str(tmp_path / "nope"), "x"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and res.stderr.startswith("error:") and len(res.stderr.strip().splitlines()) == 1


def test_report_table_plot_and_mlflow(tmp_path):
    import mlflow

    sweep = tmp_path / "multirun" / "2026-01-01" / "10-00-00"
    _job(sweep / "0_gsm8k_a", "gsm8k", "a", 0.5, 0.25)
    _job(sweep / "1_gsm8k_a", "gsm8k", "a", 0.75, 0.25)  # same cell, another seed
    _job(sweep / "2_qa_a", "qa", "a", 0.125, 0.125)
    _job(sweep / "3_gsm8k_b", "gsm8k", "b", 0.0, 0.0, finished=False)
    _job(sweep / "4_gsm8k_gepa", "gsm8k", "gepa", 0.5, 0.25, test=(0.3, 0.4), parse_failures=1)
    uri = f"sqlite:///{tmp_path}/m.db"
    res = subprocess.run([sys.executable, "-m", "runner.report", str(sweep), "--tracking-uri", uri], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    md = (sweep / "report.md").read_text()
    assert "| optimizer | gsm8k | qa |" in md
    assert "| a | 0.625 ± 0.125 (+0.375) [n=2] | 0.125 (+0.000) |" in md  # mean ± stderr over two seeds
    assert "| b | failed (1) | — |" in md
    assert "| *uncompiled baseline* | 0.250 | 0.125 |" in md
    assert "| gepa* | 0.500 (+0.250) | — |" in md and "gepa pick their candidates on this split" in md
    assert "| gepa | 0.300 → 0.400 (+0.100) | — |" in md  # the held-out test table
    assert "1 of 48 evaluated examples" in md and "| gepa | gsm8k | 1 | 0 |" in md
    png = (sweep / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["dspy-runner-reports"])
    assert len(runs) == 1
    assert runs["metrics.compiled_score.gsm8k.a"][0] == pytest.approx(0.625)
    assert runs["metrics.compiled_test_score.gsm8k.gepa"][0] == pytest.approx(0.4)
    assert runs["metrics.parse_failures"][0] == 1
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(runs["run_id"][0])}
    assert runs["metrics.compiled_score_se.gsm8k.a"][0] == pytest.approx(0.125)
    assert arts == {"report.md", "report.png", "report.html"}
    page = (sweep / "report.html").read_text()
    assert "<table>" in page and "data:image/png;base64," in page and "0.625 ± 0.125" in page
    # the report's artifacts sit where the jobs' do (conf/tracking/mlflow.yaml), never in ./mlruns
    assert not (tmp_path / "mlruns").exists() and any((tmp_path / "outputs" / "mlartifacts").rglob("report.md"))


def _rows(dir_, phase, split, scores, outputs=None):
    """examples.jsonl rows as the pipeline appends them: one per example of `split` in `phase`."""
    with open(dir_ / "examples.jsonl", "a", encoding="utf-8") as fh:
        for i, score in enumerate(scores):
            out = (outputs or {}).get(i, f"answer {i}")
            fh.write(json.dumps({"phase": phase, "split": split, "input.question": f"q{i}", "output.answer": out,
                                 "score": score, "feedback": f"expected a{i}", "trace_id": None}) + "\n")


def test_bootstrap_interval_and_p_value():
    from runner.compare import bootstrap

    low, high, p = bootstrap([1.0] * 12 + [0.0] * 28)  # 12 of 40 examples better, none worse
    assert 0.1 < low < 0.3 < high < 0.5 and p < 0.01
    low, high, p = bootstrap([1.0, -1.0] * 10)  # as many better as worse
    assert low < 0 < high and p == 1.0
    low, high, p = bootstrap([1.0, -1.0, 0.0, 0.0, 1.0])  # one net gain in five: could be luck
    assert low < 0 < high and p > 0.2
    assert bootstrap([0.5, 0.0, 1.0]) == bootstrap([0.5, 0.0, 1.0])  # seeded


def test_diff_pairs_examples_and_lists_flips(tmp_path):
    from runner.diff import comparisons, load, markdown

    a = _job(tmp_path / "a", "lora", "gepa", 0.25, 0.0, test=(0.0, 0.25))
    b = _job(tmp_path / "b", "lora", "gepa", 0.75, 0.0, test=(0.0, 0.75))
    _rows(a, "compiled", "dev", [0, 1, 0, 0])
    _rows(a, "compiled_test", "test", [0, 1, 0, 0, 0, 1, 0, 0])
    _rows(b, "compiled", "dev", [1, 1, 1, 0], outputs={0: "2e-4", 2: "16"})
    _rows(b, "compiled_test", "test", [1, 1, 1, 1, 1, 1, 0, 0])
    found = comparisons(load(str(a)), load(str(b)))
    assert [c.split for c in found] == ["dev", "test"]
    test = found[1]
    assert (test.mean_a, test.mean_b, len(test.flips)) == (0.25, 0.75, 4)
    md = markdown(load(str(a)), load(str(b)), found=found)
    assert "### Per example: test split (8 examples)" in md and "4 examples changed score" in md
    assert "| question=q0 | answer=answer 0 | 0.00 | answer=2e-4 | 1.00 | expected a0 |" in md


def test_diff_one_run_is_baseline_against_compiled(tmp_path):
    from runner.diff import load, markdown

    run = _job(tmp_path / "r", "lora", "bootstrap_fewshot", 0.5, 0.25)
    _rows(run, "baseline", "dev", [0, 1, 0, 0])
    _rows(run, "compiled", "dev", [1, 1, 0, 0])
    md = markdown(load(str(run)), None)
    assert md.startswith("## Run: baseline vs compiled")
    assert "baseline (" in md and "0.250 → compiled (" in md and "difference **+0.250**" in md


def test_fail_on_regression_gates_only_significant_drops(tmp_path):
    a = _job(tmp_path / "a", "lora", "gepa", 0.9, 0.0, test=(0.0, 0.9))
    b = _job(tmp_path / "b", "lora", "gepa", 0.1, 0.0, test=(0.0, 0.1))
    c = _job(tmp_path / "c", "lora", "gepa", 0.85, 0.0, test=(0.0, 0.85))
    _rows(a, "compiled_test", "test", [1] * 36 + [0] * 4)
    _rows(b, "compiled_test", "test", [0] * 36 + [1] * 4)  # far worse: fails the gate
    _rows(c, "compiled_test", "test", [1] * 35 + [0] * 5)  # one example worse: within noise
    out = tmp_path / "d.md"

    def diff(x, y):
        return subprocess.run([sys.executable, "-m", "runner.diff", str(x), str(y), "--fail-on-regression", "0.02",
                               "-o", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=60)

    res = diff(a, b)
    assert res.returncode == 1, res.stderr
    assert res.stderr.startswith("error: regression on the test split: -0.800")
    assert "<table>" in out.with_suffix(".html").read_text() and out.read_text() == res.stdout
    res = diff(a, c)
    assert res.returncode == 0, res.stderr
    assert "not significant" in res.stdout


def test_diff_logs_markdown_and_html_to_mlflow(tmp_path):
    import mlflow

    run = _job(tmp_path / "r", "lora", "bootstrap_fewshot", 0.5, 0.25)
    _rows(run, "baseline", "dev", [0, 1, 0, 0])
    _rows(run, "compiled", "dev", [1, 1, 0, 0])
    uri = f"sqlite:///{tmp_path}/m.db"
    res = subprocess.run([sys.executable, "-m", "runner.diff", str(run), "--mlflow", "--tracking-uri", uri],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    mlflow.set_tracking_uri(uri)
    found = mlflow.search_runs(experiment_names=["dspy-runner-reports"])
    assert len(found) == 1 and found["tags.diff.0"][0] == str(run)
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(found["run_id"][0])}
    assert arts == {"diff.md", "diff.html"}
    assert not (tmp_path / "mlruns").exists()


def _git(repo, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                   capture_output=True)


def test_diff_base_lists_changed_presets(tmp_path):
    """A repo with the project's conf/: a commit, then a change to one preset, one added preset
    and a changed default; --base HEAD lists what each experiment's resolved config gains."""
    import shutil

    shutil.copytree(ROOT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("__pycache__"))
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "conf")
    _git(tmp_path, "commit", "-qm", "base")
    preset = tmp_path / "conf" / "experiment" / "gsm8k_mipro.yaml"
    preset.write_text(preset.read_text() + "\nseed: 123\n")
    (tmp_path / "conf" / "experiment" / "lora_gepa.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /task: lora\n  - override /optimizer: gepa\n")
    res = subprocess.run([sys.executable, "-m", "runner.diff", "--base", "HEAD"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "### gsm8k_mipro: 3 resolved keys change" in res.stdout  # seed, and what interpolates it
    assert "| `seed` | `0` | `123` |" in res.stdout and "| `task.splits.seed` | `0` | `123` |" in res.stdout
    assert "- **added** preset `lora_gepa`" in res.stdout
    assert "2 of 3 experiments compose to the same resolved config" in res.stdout
    res = subprocess.run([sys.executable, "-m", "runner.diff", "--base", "no-such-branch"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and res.stderr.startswith("error: 'no-such-branch' is not a commit")
