"""Sharing through the MLflow Model Registry: register with an alias, promote, re-evaluate.

Real `python -m runner` subprocesses with the scripted DummyLM and a temporary SQLite store.
"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT, SEARCHPATH, run_runner


def _state(run_dir):
    state = json.loads((run_dir / "program" / "program.json").read_text())
    state.pop("metadata", None)
    return state


def test_register_promote_and_reevaluate(tmp_path):
    store = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/shared.db"}
    first = run_runner([SEARCHPATH, "model=scripted", "task=gsm8k", "optimizer=labeled_fewshot", "register=true"],
                       tmp_path / "a", env=store, timeout=120)
    assert first.returncode == 0, first.stderr[-2000:]
    compiled = _state(tmp_path / "a" / "run")
    assert len(compiled["demos"]) == 4

    promo = subprocess.run([sys.executable, "-m", "runner.promote", "gsm8k", "challenger"], cwd=ROOT,
                           env={**__import__("os").environ, **store}, capture_output=True, text=True, timeout=60)
    assert promo.returncode == 0, promo.stderr
    assert "gsm8k@champion -> version 1" in promo.stdout

    again = run_runner([SEARCHPATH, "model=scripted", "task=gsm8k", "program=models:/gsm8k@champion", "optimizer=none"],
                       tmp_path / "b", env=store, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    # the loaded program (4 demos), not a fresh Predict, was evaluated and saved again
    assert _state(tmp_path / "b" / "run") == compiled
    man = json.loads((tmp_path / "b" / "run" / "program" / "manifest.json").read_text())
    assert man["loaded_from"].startswith("models:/gsm8k@champion")
    assert man["program"]["_target_"] == "dspy.Predict"


def test_wrong_task_signature_is_one_clear_error(tmp_path):
    """A gsm8k program loaded for a task with another signature fails before any LM call."""
    from test_loading import GSM8K, _compiled, _save_v1

    _save_v1(_compiled(), tmp_path / "saved" / "program")
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"question": f"q{i}", "answer": f"a{i}"}) + "\n" for i in range(8)))
    res = run_runner([SEARCHPATH, "model=scripted", f"program={tmp_path / 'saved'}", "optimizer=none", "task=custom",
                      "task.signature='question -> answer'", f"task.data={data}", "metric=exact_match"],
                     tmp_path / "c", timeout=120)
    assert res.returncode != 0
    err = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert err and "signature mismatch" in err[0] and GSM8K in err[0], res.stderr[-2000:]
