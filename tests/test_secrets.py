"""No secret leaves a run: planted through the config and through the environment, a key must not
appear in any file of the run dir, the MLflow store (params, tags, traces) or its artifacts (the
.hydra copy, the program state, the logged model's pickles)."""

from __future__ import annotations

import pytest

from conftest import SEARCHPATH, run_runner

CONFIG_KEY = "sk-planted-through-config-0123456789"
ENV_KEY = "sk-planted-through-environment-9876543210"
URL_PASSWORD = "hunter2-url-password"
HEADER_TOKEN = "planted-bearer-token-5555555555"


def _files_containing(root, needles: list[str]) -> dict[str, list[str]]:
    found = {}
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits = [n for n in needles if n.encode() in data]
            if hits:
                found[str(path.relative_to(root))] = hits
    return found


def test_keys_from_config_and_environment_never_reach_an_artifact(tmp_path):
    common = [SEARCHPATH, "model=scripted", "optimizer=bootstrap_fewshot", "task=gsm8k",
              "task.splits.n_train=4", "task.splits.n_dev=2"]
    via_config = run_runner([*common, f"model.api_key={CONFIG_KEY}",
                             f"+model.proxy=http://user:{URL_PASSWORD}@127.0.0.1:3128",
                             f"+model.extra_headers={{Authorization: 'Bearer {HEADER_TOKEN}'}}"], tmp_path / "a")
    assert via_config.returncode == 0, via_config.stderr[-3000:]
    via_env = run_runner(common, tmp_path / "b", env={"OPENAI_API_KEY": ENV_KEY})
    assert via_env.returncode == 0, via_env.stderr[-3000:]

    # the jobs really had the keys (and uploaded the files the keys were written into)
    import yaml

    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):  # still valid YAML after masking
        yaml.safe_load((tmp_path / "a" / "run" / ".hydra" / name).read_text())
    assert (tmp_path / "a" / "run" / ".hydra" / "overrides.yaml").read_text().count("model.api_key=<redacted>") == 1
    for sub in ("a", "b"):
        assert (tmp_path / sub / "run" / ".hydra" / "config.yaml").is_file()
        assert any((tmp_path / sub / "mlartifacts").rglob("dspy_config.pkl")), "the logged model was not saved"
        assert any((tmp_path / sub / "mlartifacts").rglob("overrides.yaml")), "the .hydra copy was not logged"
    leaks = _files_containing(tmp_path, [CONFIG_KEY, ENV_KEY, URL_PASSWORD, HEADER_TOKEN])
    assert not leaks, leaks


def test_scrubber_masks_by_key_value_and_url():
    from runner.redaction import Scrubber

    s = Scrubber.collect({"model": {"api_key": "sk-abcdefgh1234", "max_tokens": 5, "headers": {"Authorization": "Bearer xyz12345"}}},
                         environ={"HF_TOKEN": "hf_secretvalue", "PATH": "/usr/bin:/bin"})
    tree = s.tree({"model": {"api_key": "sk-abcdefgh1234", "max_tokens": 5}, "note": "key sk-abcdefgh1234 here",
                   "overrides": ["model.api_key=sk-abcdefgh1234"], "url": "https://bob:pw123456@host/x"})
    assert tree == {"model": {"api_key": "<redacted>", "max_tokens": 5}, "note": "key <redacted> here",
                    "overrides": ["model.api_key=<redacted>"], "url": "https://bob:<redacted>@host/x"}
    assert s.text("token hf_secretvalue and Bearer xyz12345") == "token <redacted> and <redacted>"
    assert s.text("/usr/bin:/bin") == "/usr/bin:/bin"  # non-secret environment values stay


@pytest.mark.parametrize("name", ["api_key", "OPENAI_API_KEY", "hf_token", "Authorization", "db_password", "client_secret"])
def test_secret_names(name):
    from runner.redaction import is_secret_name

    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["max_tokens", "n_tokens", "tokenizer", "model"])
def test_not_secret_names(name):
    from runner.redaction import is_secret_name

    assert not is_secret_name(name)
