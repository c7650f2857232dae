"""runner.programs.loading: manifest migration, signature checks, and no unpickling by default."""

from __future__ import annotations

import json
import pickle

import pytest

from runner.errors import RunnerError

GSM8K = "signatures.gsm8k.SolveMathWordProblem"


def _compiled(module: str = "Predict"):
    """A program with two labeled demos, saved the current way (schema 1)."""
    import dspy

    from runner.programs.signature import resolve_signature

    program = getattr(dspy, module)(resolve_signature(GSM8K))
    demos = [dspy.Example(question="1+1?", answer=2.0), dspy.Example(question="2+3?", answer=5.0)]
    for _, predictor in program.named_predictors():
        predictor.demos = demos
    return program


def _save_v1(program, out, module: str = "Predict", resolver: str = "runner.programs.signature.resolve_signature"):
    from runner.programs import manifest

    man = manifest.build_manifest(program, program_cfg={"_target_": f"dspy.{module}",
                                                        "signature": {"_target_": resolver,
                                                                      "spec": GSM8K}},
                                  task={"name": "gsm8k", "signature": GSM8K}, config={}, scores={"compiled_score": 0.5},
                                  seed=0, model="dummy", backend=None)
    return manifest.save(program, out, man)


def test_v1_roundtrip_keeps_demos_and_manifest(tmp_path):
    from runner.programs.loading import load_program, manifest_of

    saved = _save_v1(_compiled(), tmp_path / "run" / "program")
    loaded = load_program(str(tmp_path / "run"), signature=GSM8K)  # the run dir works as well as program/
    assert [d["question"] for d in loaded.demos] == ["1+1?", "2+3?"]
    assert manifest_of(loaded)["scores"]["compiled_score"] == 0.5
    assert manifest_of(loaded)["source"] == str(saved.parent)


def test_manifests_naming_modules_from_before_the_layout_still_load(tmp_path):
    """Programs saved before runner/ was laid out by concern name runner.tasks.resolve_signature;
    logged models pickle classes such as runner.adapters.LenientChatAdapter by module path."""
    import runner.adapters
    import runner.tasks
    from runner.dspy_ext.adapters import lenient
    from runner.programs import signature
    from runner.programs.loading import load_program

    assert runner.tasks is signature and runner.adapters is lenient  # the same module objects
    assert signature.__spec__.name == "runner.programs.signature"
    old = pickle.dumps(lenient.LenientChatAdapter, protocol=0).replace(b"runner.dspy_ext.adapters.lenient",
                                                                         b"runner.adapters")
    assert b"crunner.adapters\n" in old and pickle.loads(old) is lenient.LenientChatAdapter
    _save_v1(_compiled(), tmp_path / "program", resolver="runner.tasks.resolve_signature")
    loaded = load_program(str(tmp_path / "program"), signature=GSM8K)
    assert [d["question"] for d in loaded.demos] == ["1+1?", "2+3?"]


@pytest.mark.parametrize("module", ["Predict", "ChainOfThought"])
def test_schema0_bare_program_json_is_migrated(tmp_path, module):
    """Schema 0 = a bare program.json (plain DSPy save), no manifest, no run config."""
    from runner.programs.loading import load_program, manifest_of
    from runner.programs.manifest import signature_hash

    program = _compiled(module)
    program.save(str(tmp_path / "program.json"), save_program=False)
    loaded = load_program(str(tmp_path / "program.json"), signature=GSM8K)
    man = manifest_of(loaded)
    assert man["schema_version"] == 1 and man["migrated_from"] == 0
    assert man["program"]["_target_"] == f"dspy.{module}"
    assert man["signature_hash"] == signature_hash(program)
    assert man["versions"].get("dspy")  # taken from the state's own metadata
    assert [d["question"] for _, p in loaded.named_predictors() for d in p.demos] == ["1+1?", "2+3?"]


def test_schema0_in_old_run_dir_uses_hydra_config(tmp_path):
    """An old run dir: program/program.json + .hydra/config.yaml (ChainOfThought config)."""
    from runner.programs.loading import load_program, manifest_of

    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text(
        "task:\n  name: gsm8k\n  signature: " + GSM8K + "\n"
        "program:\n  _target_: dspy.ChainOfThought\n  signature:\n"
        "    _target_: runner.programs.signature.resolve_signature\n    spec: ${task.signature}\n")
    (tmp_path / "program").mkdir()
    _compiled("ChainOfThought").save(str(tmp_path / "program" / "program.json"), save_program=False)
    man = manifest_of(load_program(str(tmp_path)))  # no signature given: comes from the config
    assert man["program"]["_target_"] == "dspy.ChainOfThought"
    assert man["task"] == {"name": "gsm8k", "signature": GSM8K}


def test_schema0_without_signature_fails_clearly(tmp_path):
    from runner.programs.loading import load_program

    _compiled().save(str(tmp_path / "program.json"), save_program=False)
    with pytest.raises(RunnerError, match="needs the task signature"):
        load_program(str(tmp_path / "program.json"))


def test_schema0_state_for_other_signature_fails(tmp_path):
    from runner.programs.loading import load_program

    _compiled().save(str(tmp_path / "program.json"), save_program=False)
    with pytest.raises(RunnerError, match="fields per predictor"):
        load_program(str(tmp_path / "program.json"), signature="context, question -> answer")


def test_signature_hash_mismatch_fails(tmp_path):
    from runner.programs.loading import load_program

    _save_v1(_compiled(), tmp_path)
    with pytest.raises(RunnerError, match="signature mismatch") as err:
        load_program(str(tmp_path), signature="question -> answer")
    assert "task=" in err.value.hint


def test_newer_schema_fails(tmp_path):
    from runner.programs.loading import load_program

    _save_v1(_compiled(), tmp_path)
    man = json.loads((tmp_path / "manifest.json").read_text())
    man["schema_version"] = 99
    (tmp_path / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(RunnerError, match="schema 99, newer"):
        load_program(str(tmp_path), signature=GSM8K)


def test_manifest_cannot_call_arbitrary_targets(tmp_path):
    from runner.programs.loading import load_program

    _save_v1(_compiled(), tmp_path)
    man = json.loads((tmp_path / "manifest.json").read_text())
    man["program"]["_target_"] = "os.system"
    (tmp_path / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(RunnerError, match="not a dspy.Module"):
        load_program(str(tmp_path), signature=GSM8K)


def test_loading_never_unpickles(tmp_path, monkeypatch):
    """JSON state loads with every unpickler disabled; a pickle-only program is refused."""
    import cloudpickle

    from runner.programs.loading import load_program

    def boom(*a, **k):
        raise AssertionError("unpickled")

    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(cloudpickle, "load", boom)
    monkeypatch.setattr(cloudpickle, "loads", boom)
    _save_v1(_compiled(), tmp_path / "ok")
    assert len(load_program(str(tmp_path / "ok"), signature=GSM8K).demos) == 2

    (tmp_path / "pkl").mkdir()
    (tmp_path / "pkl" / "program.pkl").write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(RunnerError, match="allow_pickle"):
        load_program(str(tmp_path / "pkl"))


def test_argv_rewrite():
    from runner.__main__ import rewrite_argv

    assert rewrite_argv(["program=models:/gsm8k@champion", "optimizer=none"]) == [
        "program=load", "program.uri='models:/gsm8k@champion'", "optimizer=none"]
    assert rewrite_argv(["program=outputs/runs/x,models:/a/2"]) == ["program=load", "program.uri='outputs/runs/x','models:/a/2'"]
    assert rewrite_argv(["program=chain_of_thought", "task=gsm8k"]) == ["program=chain_of_thought", "task=gsm8k"]
    assert rewrite_argv(["program=predict,chain_of_thought"]) == ["program=predict,chain_of_thought"]
