"""Saving a compiled program as state JSON plus a manifest that says how to rebuild it.

State JSON (not pickle) is what DSPy's `Module.save(path.json)` writes: demos, instructions,
signatures. The manifest records the program config (its `_target_` + signature spec), the
signature hash, versions, scores and seed, so a later runner can rebuild the module and load the
state without unpickling anything.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
from pathlib import Path

SCHEMA_VERSION = 1
PROGRAM_FILE = "program.json"
MANIFEST_FILE = "manifest.json"
STATE_ARTIFACT = "program_state"  # the MLflow artifact dir every run logs both files under


def signature_hash(program) -> str:
    """sha256 over every predictor's field names, types and descriptions (not instructions,
    which optimizers rewrite): two programs with the same hash accept the same inputs."""
    parts = []
    for name, predictor in program.named_predictors():
        sig = predictor.signature
        for kind, fields in (("in", sig.input_fields), ("out", sig.output_fields)):
            for fname, field in fields.items():
                desc = (field.json_schema_extra or {}).get("desc", "")
                parts.append(f"{name}|{kind}|{fname}|{field.annotation}|{desc}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


# The packages a result depends on: the runner, DSPy and its LM client, tracking, config, and the
# local backends with their constrained-decoding libraries.
PACKAGES = ("dspy", "dspy-runner", "mlflow", "litellm", "hydra-core", "llama-cpp-python", "mlx", "mlx-lm",
            "torch", "transformers", "llguidance")


def versions() -> dict:
    """Python's and each package's version (None where it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def git_state(where: str | Path = ".") -> dict | None:
    """{"commit", "dirty"} of the git work tree the job runs in (its configs and code), or None
    outside one."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def build_manifest(program, *, program_cfg: dict, task: dict, config: dict, scores: dict, seed: int,
                   model: str, backend: dict | None, evaluated: dict | None = None) -> dict:
    """`scores`: {phase}_score per evaluated phase and split (baseline, compiled, baseline_test,
    compiled_test) and the improvements; `evaluated`: per phase, examples scored and how many of
    them gave no parseable output ({"baseline": {"n": 16, "parse_failures": 0}, ...})."""
    return {
        "schema_version": SCHEMA_VERSION,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "program": program_cfg,
        "task": task,
        "signature_hash": signature_hash(program),
        "model": model,
        "backend": backend or {},
        "seed": seed,
        "scores": scores,
        "evaluated": evaluated or {},
        "versions": versions(),
        "git": git_state(),
        "config": config,
    }


def save(program, out_dir: str | Path, manifest: dict) -> Path:
    """Write program.json (DSPy state) and manifest.json into `out_dir`; returns the dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    program.save(str(out / PROGRAM_FILE), save_program=False)
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
    return out
