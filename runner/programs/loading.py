"""Loading a saved program back: from a run dir, a program dir, or the MLflow Model Registry.

Why not `mlflow.dspy.load_model`: that unpickles (cloudpickle) the whole module and the DSPy
settings, which runs arbitrary code from whoever logged the model. Every run also logs
`program_state/` (program.json = DSPy *state JSON*, manifest.json = how to rebuild the module),
so loading rebuilds the module from the manifest's program config and loads the JSON state into
it. Nothing is unpickled unless `allow_pickle=True` is passed explicitly.

The manifest's `_target_`s are checked before anything is built: the program must be a
`dspy.Module` subclass and its signature must come from `runner.programs.signature.resolve_signature`, so a
tampered manifest cannot make the loader call an arbitrary function.

Manifest schemas (manifest.json `schema_version`):
  0  a bare `program.json` with no manifest.json, as written by plain DSPy
     (`module.save("program.json")`) or by runners before manifests existed. Migrated on load:
     the program config comes from the run's `.hydra/config.yaml` when the program dir sits in a
     run dir, otherwise from the shape of the state (Predict vs ChainOfThought) plus the task
     signature the caller supplies; the signature hash is computed from the rebuilt module after
     checking the state's field count fits it.
  1  the current layout (runner.programs.manifest.build_manifest).
A schema newer than this runner knows fails with a clear error instead of guessing.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from runner.errors import RunnerError
from runner.programs.manifest import MANIFEST_FILE, PROGRAM_FILE, SCHEMA_VERSION, STATE_ARTIFACT

log = logging.getLogger(__name__)

SIGNATURE_RESOLVER = "runner.programs.signature.resolve_signature"


def current_path(target: str) -> str:
    """A `_target_` written before runner/ was laid out by concern, under its module's new name."""
    from runner import MOVED_MODULES

    module, _, name = target.rpartition(".")
    return f"{MOVED_MODULES[module]}.{name}" if module in MOVED_MODULES else target
MLFLOW_URI = re.compile(r"^(models|runs):/")


# --------------------------------------------------------------------------- locating files

def is_program_ref(value: str) -> bool:
    """True for what `program=` may name instead of a config option: an MLflow URI or a path."""
    return bool(MLFLOW_URI.match(value)) or value.endswith(".json") or "/" in value or os.sep in value


def _local_program_dir(path: Path) -> Path:
    """A run dir (holds program/), a program dir (holds program.json) or a program.json file."""
    if path.is_file() and path.suffix == ".json":
        return path.parent if path.name == PROGRAM_FILE else path
    if (path / PROGRAM_FILE).is_file():
        return path
    if (path / "program" / PROGRAM_FILE).is_file():
        return path / "program"
    if (path / STATE_ARTIFACT / PROGRAM_FILE).is_file():
        return path / STATE_ARTIFACT
    if path.is_dir() and (path / "program.pkl").is_file():
        return path
    raise RunnerError(f"no saved program at {path}",
                      "point at a run dir (outputs/runs/...), its program/ dir, or a program.json file")


def _mlflow_run_id(uri: str, tracking_uri: str | None) -> tuple[str, str]:
    """(run_id, description) for models:/name@alias, models:/name/version or runs:/run_id."""
    import mlflow
    from mlflow.exceptions import MlflowException

    if tracking_uri:
        from runner.tracking import connect

        connect(tracking_uri)
    client = mlflow.MlflowClient()
    rest = uri.split(":/", 1)[1].strip("/")
    if uri.startswith("runs:/"):
        return rest.split("/")[0], f"run {rest.split('/')[0]}"
    try:
        if "@" in rest:
            name, alias = rest.split("@", 1)
            mv = client.get_model_version_by_alias(name, alias)
        elif "/" in rest:
            name, version = rest.rsplit("/", 1)
            mv = client.get_model_version(name, version)
        else:
            raise RunnerError(f"model URI {uri!r} names no version or alias",
                              "use models:/<name>@<alias> or models:/<name>/<version>")
    except MlflowException as exc:
        raise RunnerError(f"cannot resolve {uri} in the registry at {mlflow.get_tracking_uri()}: "
                          f"{str(exc).splitlines()[0][:200]}",
                          "check the name/alias (python -m runner.promote --list NAME) and MLFLOW_TRACKING_URI") from exc
    if not mv.run_id:
        raise RunnerError(f"{uri} (version {mv.version}) has no source run", "register programs with `python -m runner register=true`")
    return mv.run_id, f"{mv.name} version {mv.version}"


def _download_state(uri: str, tracking_uri: str | None) -> tuple[Path, str]:
    """Download the run's program_state/ artifacts (JSON only) to a temp dir."""
    import mlflow

    run_id, what = _mlflow_run_id(uri, tracking_uri)
    dst = Path(tempfile.mkdtemp(prefix="dspy-runner-program-"))
    try:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=STATE_ARTIFACT, dst_path=str(dst))
    except Exception as exc:
        raise RunnerError(f"{uri} ({what}, run {run_id}) has no {STATE_ARTIFACT}/ artifacts: {str(exc).splitlines()[0][:200]}",
                          "it was logged by something other than dspy-runner; pass allow_pickle=true only if you trust it") from exc
    return Path(path), run_id


# --------------------------------------------------------------------------- manifests

def _check_targets(program_cfg: Any) -> None:
    """Refuse any `_target_` that is not a dspy.Module subclass or the signature resolver."""
    import dspy
    from hydra.utils import get_object

    def walk(node, top: bool):
        if isinstance(node, dict):
            target = node.get("_target_")
            if target is not None:
                if current_path(target) == SIGNATURE_RESOLVER and not top:
                    pass
                else:
                    try:
                        obj = get_object(target)
                    except Exception as exc:
                        raise RunnerError(f"manifest program target {target!r} cannot be imported: {exc}",
                                          "install the package that defines it") from exc
                    if not (isinstance(obj, type) and issubclass(obj, dspy.Module)):
                        raise RunnerError(f"manifest program target {target!r} is not a dspy.Module",
                                          "refusing to call it; only module classes and the signature resolver are built")
            for k, v in node.items():
                if k != "_target_":
                    walk(v, top=False)
        elif isinstance(node, list):
            for v in node:
                walk(v, top=False)

    if not isinstance(program_cfg, dict) or "_target_" not in program_cfg:
        raise RunnerError("manifest has no program config with a _target_", "the manifest is damaged; re-save the program")
    walk(program_cfg, top=True)


def _infer_program_cfg(state: dict, signature_spec: str | None) -> dict:
    """Schema 0 without a Hydra config: the module type from the state's shape."""
    if signature_spec is None:
        raise RunnerError("a bare program.json (no manifest) needs the task signature to rebuild the module",
                          "load it with the task config (python -m runner task=... program=<path>) or pass signature=")
    sig = {"_target_": SIGNATURE_RESOLVER, "spec": signature_spec}
    if "signature" in state and "demos" in state:
        return {"_target_": "dspy.Predict", "signature": sig}
    inner = state.get("predict")
    if set(state) - {"metadata"} == {"predict"} and isinstance(inner, dict) and "signature" in inner:
        return {"_target_": "dspy.ChainOfThought", "signature": sig}
    raise RunnerError(f"cannot tell which module wrote this bare program.json (top-level keys {sorted(state)[:6]})",
                      "only Predict and ChainOfThought states can be migrated without a manifest; re-save it with dspy-runner")


def _program_cfg_from_hydra(program_dir: Path) -> dict | None:
    """Schema 0 inside an old run dir: the program node of ../.hydra/config.yaml, resolved."""
    cfg_file = program_dir.parent / ".hydra" / "config.yaml"
    if not cfg_file.is_file():
        return None
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(cfg_file)
    try:
        return {"program": OmegaConf.to_container(cfg.program, resolve=True),
                "task": {"name": cfg.task.name, "signature": cfg.task.signature}}
    except Exception as exc:  # an interpolation that needs Hydra's runtime
        log.warning("cannot resolve the program config in %s: %s", cfg_file, exc)
        return None


def migrate(manifest: dict | None, state: dict, program_dir: Path | None, signature_spec: str | None) -> dict:
    """Bring a manifest (None = schema 0) up to SCHEMA_VERSION, or fail clearly."""
    if manifest is None:
        manifest = {"schema_version": 0}
    version = manifest.get("schema_version")
    if not isinstance(version, int):
        raise RunnerError(f"manifest schema_version {version!r} is not a number", "the manifest is damaged; re-save the program")
    if version > SCHEMA_VERSION:
        raise RunnerError(f"the program's manifest has schema {version}, newer than this runner understands ({SCHEMA_VERSION})",
                          "upgrade dspy-runner (pip install -U dspy-runner) to load it")
    if version == 0:
        found = _program_cfg_from_hydra(program_dir) if program_dir else None
        meta = state.get("metadata") or {}
        manifest = {
            "schema_version": 1,
            "migrated_from": 0,
            "program": found["program"] if found else _infer_program_cfg(state, signature_spec),
            "task": found["task"] if found else {"name": None, "signature": signature_spec},
            "signature_hash": None,  # filled in by load_dir from the rebuilt module
            "model": None, "backend": {}, "seed": None, "scores": {},
            "versions": {k: v for k, v in (meta.get("dependency_versions") or {}).items()},
            "config": {},
        }
        version = 1
    if version != SCHEMA_VERSION:  # pragma: no cover - only one step today
        raise RunnerError(f"no migration from manifest schema {version}", "re-save the program with this runner")
    return manifest


# --------------------------------------------------------------------------- building

def _build(program_cfg: dict, signature_spec: str | None):
    """Instantiate the module from its (checked) config, with the task signature if given."""
    from hydra.utils import instantiate

    cfg = copy.deepcopy(program_cfg)
    if signature_spec is not None and isinstance(cfg.get("signature"), dict):
        cfg["signature"]["spec"] = signature_spec
    _check_targets(cfg)
    return instantiate(cfg)


def _field_counts(state: dict) -> list[int]:
    def find(node):
        if isinstance(node, dict):
            if "signature" in node and "demos" in node:
                yield len(node["signature"].get("fields", []))
            else:
                for k, v in node.items():
                    if k != "metadata":
                        yield from find(v)
    return list(find(state))


def load_dir(program_dir: Path, signature_spec: str | None = None, source: str | None = None):
    """Rebuild + load a program from a dir holding program.json (+ manifest.json)."""
    from runner.programs.manifest import signature_hash

    state_file = program_dir / PROGRAM_FILE
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RunnerError(f"cannot read {state_file}: {exc}", "the saved program is missing or damaged") from exc
    man_file = program_dir / MANIFEST_FILE
    raw = None
    if man_file.is_file():
        try:
            raw = json.loads(man_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise RunnerError(f"cannot parse {man_file}: {exc}", "the manifest is damaged; re-save the program") from exc
    manifest = migrate(raw, state, program_dir, signature_spec)

    program = _build(manifest["program"], signature_spec)
    got = signature_hash(program)
    if manifest.get("signature_hash") is None:  # migrated: check the state fits, then record the hash
        want_counts = [len(p.signature.fields) for _, p in program.named_predictors()]
        if _field_counts(state) != want_counts:
            raise RunnerError(f"the bare program.json at {program_dir} has {_field_counts(state)} fields per predictor, "
                              f"the rebuilt {manifest['program']['_target_']} expects {want_counts}",
                              "the program was saved for a different signature or module")
        manifest["signature_hash"] = got
    elif got != manifest["signature_hash"]:
        task = (manifest.get("task") or {}).get("signature")
        raise RunnerError(f"signature mismatch: the program at {source or program_dir} was saved for {task!r} "
                          f"(hash {manifest['signature_hash'][:12]}), the current "
                          f"{'task signature ' + repr(signature_spec) if signature_spec else 'code'} hashes to {got[:12]}",
                          "use the task the program was compiled for (task=...), or recompile it")
    program.load_state(state)
    manifest["source"] = source or str(program_dir)
    program._runner_manifest = manifest
    return program


def _load_pickled(path: Path):
    import dspy

    log.warning("allow_pickle=true: unpickling %s (runs code from whoever saved it)", path)
    return dspy.load(str(path), allow_pickle=True)


def resolve(uri: str, tracking_uri: str | None = None) -> tuple[Path, str]:
    """(local dir holding the program files, source description) for a path or MLflow URI."""
    if MLFLOW_URI.match(uri):
        path, run_id = _download_state(uri, tracking_uri)
        return path, f"{uri} (run {run_id})"
    path = Path(uri).expanduser()
    if not path.exists():
        raise RunnerError(f"program {uri!r} does not exist", "pass a run dir, a program dir, program.json or models:/<name>@<alias>")
    return _local_program_dir(path.resolve()), str(path.resolve())


def load_program(uri: str, signature: str | None = None, tracking_uri: str | None = None,
                 allow_pickle: bool = False):
    """`_target_` of conf/program/load.yaml and the loader behind runner.serve.

    `signature` (the task's signature spec) makes the load fail unless the saved program was
    compiled for the same signature. `allow_pickle` only matters for programs saved without
    state JSON (DSPy `save_program=True` dirs); it is off by default because unpickling runs code.
    """
    program_dir, source = resolve(str(uri), tracking_uri)
    if not (program_dir / PROGRAM_FILE).is_file():
        if not allow_pickle:
            raise RunnerError(f"{source} holds only a pickled program (no {PROGRAM_FILE})",
                              "unpickling runs arbitrary code; pass allow_pickle=true only for a program you trust")
        return _load_pickled(program_dir)
    return load_dir(program_dir, signature, source)


def manifest_of(program) -> dict:
    """The (migrated) manifest a loaded program came with; {} for a freshly built one."""
    return getattr(program, "_runner_manifest", None) or {}
