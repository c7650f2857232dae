"""Models named by Hugging Face hub id, as mlx-lm and transformers name them.

`mlx/<org>/<repo>` and `torch/<org>/<repo>` are a model folder (the repo's snapshot);
`llamacpp/<org>/<repo>` is the repo's one GGUF file, and `<backend>/<org>/<repo>/<file>` picks a
file. Everything goes through huggingface_hub and its cache, so its settings apply: `HF_HOME` /
`HF_HUB_CACHE` (where), `HF_HUB_OFFLINE=1` (cache only), `HF_TOKEN` (private and gated repos).
Online, a model not in the cache is downloaded once, with huggingface_hub's progress bars;
offline, one error names the model and the command that fetches it. A local path that exists
always wins over a hub id (runner.lm.embedded.resolve_model_path decides).
"""

from __future__ import annotations

from pathlib import Path

from runner.errors import RunnerError


def split_id(name: str) -> tuple[str, str | None]:
    """`org/repo` -> (org/repo, None); `org/repo/sub/file.gguf` -> (org/repo, sub/file.gguf)."""
    parts = [p for p in name.split("/") if p]
    return "/".join(parts[:2]), ("/".join(parts[2:]) or None)


def looks_like_id(name: str) -> bool:
    """`org/repo[/file]`: not absolute, not relative to here, not a home path."""
    parts = name.split("/")
    return len(parts) >= 2 and all(parts[:2]) and not name.startswith(("/", ".", "~"))


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _fetch_hint(repo_id: str, filename: str | None = None) -> str:
    what = f"hf download {repo_id}" + (f" {filename}" if filename else "")
    return f"fetch it first with `{what}` (huggingface_hub's CLI), or unset HF_HUB_OFFLINE"


def _call(fn, repo_id: str, filename: str | None, name: str):
    """Run a huggingface_hub call; its errors become one RunnerError line."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError)

    try:
        return fn()
    except GatedRepoError as exc:
        raise RunnerError(f"{repo_id} is gated on the Hugging Face hub", "accept its terms and set HF_TOKEN") from exc
    except RepositoryNotFoundError as exc:
        raise RunnerError(f"no model repo {repo_id!r} on the Hugging Face hub (model {name})",
                          "check the id, and set HF_TOKEN for a private repo") from exc
    except LocalEntryNotFoundError as exc:  # (a subclass of EntryNotFoundError: first)
        if _offline():
            raise RunnerError(f"{name} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is set",
                              _fetch_hint(repo_id, filename)) from exc
        raise RunnerError(f"cannot download {name} from the Hugging Face hub ({exc.__class__.__name__})",
                          "check the network, or fetch it where there is one: " + _fetch_hint(repo_id, filename)) from exc
    except EntryNotFoundError as exc:
        raise RunnerError(f"{repo_id} has no file {filename!r}", f"list its files: hf download {repo_id} --dry-run") from exc


def _gguf_files(repo_id: str, name: str) -> list[str]:
    """The GGUF files of a repo: listed by the hub, or, offline, found in the cached snapshot."""
    from huggingface_hub import HfApi, snapshot_download

    if _offline():
        folder = Path(_call(lambda: snapshot_download(repo_id, local_files_only=True), repo_id, None, name))
        return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.gguf"))
    files = _call(lambda: HfApi().list_repo_files(repo_id), repo_id, None, name)
    return sorted(f for f in files if f.endswith(".gguf"))


def resolve(name: str, backend: str) -> Path:
    """The local path of hub model `name` for `backend`, downloading it into the cache if needed."""
    from huggingface_hub import hf_hub_download, snapshot_download

    repo_id, filename = split_id(name)
    if filename is None and backend == "llamacpp":
        ggufs = _gguf_files(repo_id, name)
        if not ggufs:
            raise RunnerError(f"{repo_id} has no .gguf file for the llamacpp backend",
                              f"use a GGUF repo, or another backend: model=mlx / model=torch with {repo_id}")
        if len(ggufs) > 1:
            raise RunnerError(f"{repo_id} has {len(ggufs)} GGUF files: {', '.join(ggufs)}",
                              f"pick one: llamacpp/{repo_id}/<file>, e.g. llamacpp/{repo_id}/{ggufs[0]}")
        filename = ggufs[0]
    if filename is not None:
        return Path(_call(lambda: hf_hub_download(repo_id, filename, local_files_only=_offline()),
                          repo_id, filename, name))
    return Path(_call(lambda: snapshot_download(repo_id, local_files_only=_offline()), repo_id, None, name))
