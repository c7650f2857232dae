"""Hub ids for the local backends, offline: a Hugging Face cache layout built in a temp HF_HOME
(models--org--repo/snapshots/<rev>/..., refs/main) from the embedded GGUF and its mlx-lm folder."""

from __future__ import annotations

import os
import shutil

import pytest

from conftest import run_runner
from runner.errors import RunnerError
from runner.lm.build import backend_available

REV = "0123456789abcdef0123456789abcdef01234567"


def _repo(hub, repo_id: str, files: dict[str, object]):
    """A cached snapshot of `repo_id` holding `files` (name -> source path to link, or text)."""
    folder = hub / f"models--{repo_id.replace('/', '--')}"
    snap = folder / "snapshots" / REV
    snap.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(REV)
    for name, source in files.items():
        target = snap / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, str):
            target.write_text(source)
        else:
            os.symlink(source, target)
    return snap


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """HF_HOME in tmp_path, offline, for this process and for the jobs it starts."""
    from huggingface_hub import constants

    hub = tmp_path / "hf" / "hub"
    hub.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return hub


def test_a_gguf_repo_resolves_from_the_cache_for_llamacpp(offline_hub):
    from runner.lm.embedded import embedded_gguf_path, resolve_model_path

    snap = _repo(offline_hub, "acme/tiny-gguf", {"model.Q4_1.gguf": embedded_gguf_path(), "README.md": "hi"})
    path = resolve_model_path("acme/tiny-gguf", "llamacpp")
    assert path == snap / "model.Q4_1.gguf" or path.resolve() == embedded_gguf_path().resolve()
    assert resolve_model_path("acme/tiny-gguf", "mlx") == snap  # a folder for mlx / torch


def test_several_ggufs_are_listed_and_one_can_be_picked(offline_hub):
    from runner.lm.embedded import resolve_model_path

    snap = _repo(offline_hub, "acme/multi", {"a.Q4_0.gguf": "x", "b.Q8_0.gguf": "y"})
    with pytest.raises(RunnerError) as err:
        resolve_model_path("acme/multi", "llamacpp")
    assert "a.Q4_0.gguf, b.Q8_0.gguf" in err.value.message and "llamacpp/acme/multi/a.Q4_0.gguf" in err.value.hint
    assert resolve_model_path("acme/multi/b.Q8_0.gguf", "llamacpp") == snap / "b.Q8_0.gguf"


def test_not_cached_offline_names_the_model_and_the_fetch_command(offline_hub):
    from runner.lm.embedded import resolve_model_path

    with pytest.raises(RunnerError) as err:
        resolve_model_path("acme/absent", "mlx")
    assert "acme/absent is not in the Hugging Face cache" in err.value.message
    assert "hf download acme/absent" in err.value.hint


def test_a_local_path_wins_over_a_hub_id(offline_hub, tmp_path, monkeypatch):
    from runner.lm.embedded import resolve_model_path

    (tmp_path / "acme" / "local").mkdir(parents=True)
    _repo(offline_hub, "acme/local", {"x.gguf": "x"})
    monkeypatch.chdir(tmp_path)
    assert resolve_model_path("acme/local", "mlx") == (tmp_path / "acme" / "local").resolve()


@pytest.mark.slow
@pytest.mark.skipif(not backend_available("llamacpp"), reason="llama-cpp-python missing")
def test_a_job_runs_on_a_hub_id_offline_and_the_uncached_one_fails_in_one_line(offline_hub, tmp_path):
    from runner.lm.embedded import embedded_gguf_path

    _repo(offline_hub, "acme/smollm2-gguf", {"SmolLM2-135M-Instruct.Q4_1.gguf": embedded_gguf_path()})
    env = {"HF_HOME": os.environ["HF_HOME"], "HF_HUB_OFFLINE": "1"}
    proc = run_runner(["model=llamacpp", "model.model=llamacpp/acme/smollm2-gguf", "optimizer=none",
                       "task.splits.n_dev=2", "tracking.log_model=false"], tmp_path / "a", env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "llamacpp/acme/smollm2-gguf" in proc.stdout + proc.stderr
    proc = run_runner(["model=auto", "model.model_name=acme/absent", "optimizer=none"], tmp_path / "b", env=env)
    err = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1 and len(err) == 1 and "hf download acme/absent" in err[0], proc.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.skipif(not backend_available("mlx"), reason="mlx-lm missing")
def test_an_mlx_folder_by_hub_id(offline_hub, tmp_path):
    from runner.lm.build import build_lm
    from runner.lm.embedded import embedded_gguf_path
    from runner.lm.gguf_to_mlx import ensure_converted

    folder = ensure_converted(embedded_gguf_path(), tmp_path / "convert")
    _repo(offline_hub, "acme/smollm2-mlx", {p.name: p for p in folder.iterdir() if p.is_file()})
    lm = build_lm("mlx/acme/smollm2-mlx", max_tokens=4, cache=False)
    out = lm.forward(messages=[{"role": "user", "content": "What is the capital of France?"}])
    assert out.usage["completion_tokens"] == 4 and out.choices[0].message.content.strip()
    shutil.rmtree(tmp_path / "convert")
