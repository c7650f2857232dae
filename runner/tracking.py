"""MLflow: one run per job, params from the resolved config, failures marked, nothing lost.

The run starts before anything expensive so a crash or Ctrl-C still leaves a FAILED/KILLED
run with every metric logged up to that point.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from runner.errors import RunnerError
from runner.redaction import Scrubber, is_secret_name

log = logging.getLogger(__name__)

MAX_PARAM_LEN = 6000  # MLflow's limit on a param value


def flatten(tree, prefix: str = "") -> dict[str, str]:
    """{'a': {'b': 1}} -> {'a.b': '1'}; lists become their JSON-ish str."""
    out: dict[str, str] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    out[prefix[:-1]] = str(tree)[:MAX_PARAM_LEN]
    return out


def resolved_config(cfg: DictConfig, scrubber: Scrubber) -> dict:
    """The resolved config as plain containers, secrets masked."""
    return scrubber.tree(OmegaConf.to_container(cfg, resolve=True))


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` tracking URI, else None."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


@contextmanager
def _store_lock(db: Path | None):
    """Serialize first contact with a SQLite store across processes: parallel sweep jobs
    (hydra/launcher=parallel) otherwise race in MLflow's schema migration of a new database
    ("table _alembic_tmp_experiments already exists") and in creating the experiment."""
    if db is None:
        yield
        return
    try:
        import fcntl
    except ImportError:  # Windows: no flock; parallel jobs there need an existing store
        yield
        return
    with open(f"{db}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def connect(uri: str) -> None:
    """Point MLflow at the store `uri`: a tracking server must answer (in seconds, not after MLflow's
    retries), a SQLite store's directory must be writable. RunnerError otherwise."""
    import mlflow

    from runner.endpoints import check_endpoint

    check_endpoint(uri, "the MLflow tracking server",
                   "start it (mlflow server ...) or point tracking.tracking_uri / MLFLOW_TRACKING_URI at a reachable store")
    db = _sqlite_path(uri)
    try:
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunnerError(f"cannot open the MLflow store {uri}: {exc}",
                          "check that its directory is writable, or set tracking.tracking_uri / MLFLOW_TRACKING_URI") from exc
    mlflow.set_tracking_uri(uri)


def use_experiment(tracking_cfg, name: str | None = None) -> None:
    """Connect to the store of `tracking_cfg` and make `name` (default: its experiment_name) the
    active experiment, created with the config's artifact location when new: every command's
    artifacts land beside the jobs', never in ./mlruns."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = tracking_cfg.tracking_uri
    connect(uri)
    name = name or tracking_cfg.experiment_name
    try:
        with _store_lock(_sqlite_path(uri)):
            if mlflow.get_experiment_by_name(name) is None:
                location = tracking_cfg.artifact_location
                artifact_uri = Path(location).resolve().as_uri() if location and "://" not in location else location
                mlflow.create_experiment(name, artifact_location=artifact_uri)
            mlflow.set_experiment(name)
    except (OSError, MlflowException) as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise RunnerError(f"cannot open the MLflow store {uri}: {first}",
                          "check that its directory is writable, or set tracking.tracking_uri / MLFLOW_TRACKING_URI") from exc


def start(tracking_cfg, run_name: str, tags: dict, scrubber: Scrubber | None = None):
    """Use the store and experiment, start the run and turn on DSPy autolog, with `scrubber`
    masking secrets in every span before it is exported."""
    import mlflow

    use_experiment(tracking_cfg)
    run = mlflow.start_run(run_name=run_name, tags={k: str(v) for k, v in tags.items()})
    if tracking_cfg.autolog:
        import mlflow.dspy
        import mlflow.tracing

        from runner.redaction import span_scrubber

        mlflow.tracing.configure(span_processors=[span_scrubber(scrubber or Scrubber.collect())])
        mlflow.dspy.autolog(log_traces=True, log_traces_from_eval=True, log_traces_from_compile=False, silent=True)
    return run


def log_params(params: dict[str, str]) -> None:
    import mlflow

    mlflow.log_params(params)  # MLflow splits it into batches of its per-request limit


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    import mlflow

    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None}, step=step)


def log_text(text: str, artifact_file: str) -> None:
    import mlflow

    mlflow.log_text(text, artifact_file)


def log_datasets(splits: dict, task_name: str, targets: str | None) -> None:
    """Each split as a dataset input of the run (the UI's Datasets column), with its rows."""
    import mlflow
    import mlflow.data
    import pandas as pd

    for split, examples in splits.items():
        if examples:
            frame = pd.DataFrame([{k: _cell(v) for k, v in ex.toDict().items()} for ex in examples])
            target = targets if targets in frame.columns else None
            mlflow.log_input(mlflow.data.from_pandas(frame, name=f"{task_name}-{split}", targets=target), context=split)


def _cell(value):
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def example_rows(phase: str, split: str, rows: list[dict]) -> list[dict]:
    """Evaluation rows flattened for a table: phase, split, input.*, output.*, score, feedback, trace_id."""
    out = []
    for r in rows:
        flat = {"phase": phase, "split": split}
        flat.update({f"input.{k}": _cell(v) for k, v in r["inputs"].items()})
        flat.update({f"output.{k}": _cell(v) for k, v in r["outputs"].items()})
        flat.update(score=r["score"], feedback=r["feedback"], trace_id=r["trace_id"])
        out.append(flat)
    return out


def log_assessments(rows: list[dict], name: str) -> None:
    """The metric's score and feedback on the trace of each evaluated example (MLflow's Feedback,
    the feedback text as its rationale): what the trace view shows next to the call."""
    import mlflow
    from mlflow.entities import AssessmentSource, AssessmentSourceType

    source = AssessmentSource(source_type=AssessmentSourceType.CODE, source_id=name)
    if any(row.get("trace_id") for row in rows):
        mlflow.flush_trace_async_logging()  # traces are exported in the background: store them first
    for row in rows:
        if row.get("trace_id"):
            mlflow.log_feedback(trace_id=row["trace_id"], name=name, value=row["score"],
                                rationale=row.get("feedback"), source=source)


def log_table(rows: list[dict], artifact_file: str) -> None:
    import mlflow
    import pandas as pd

    if rows:
        mlflow.log_table(data=pd.DataFrame(rows), artifact_file=artifact_file)


def describe(text: str) -> None:
    """The run's description (its note in the MLflow UI)."""
    import mlflow

    mlflow.set_tag("mlflow.note.content", text)


def log_dir(path: str | Path, artifact_path: str) -> None:
    import mlflow

    if Path(path).is_dir():
        mlflow.log_artifacts(str(path), artifact_path)


def finish(status: str) -> None:
    """End the active run with FINISHED, FAILED or KILLED; never raise while cleaning up."""
    import mlflow

    try:
        if mlflow.active_run() is not None:
            mlflow.end_run(status=status)
    except Exception as exc:  # the store may be what failed; report, keep the original error
        log.warning("could not close the MLflow run: %s", exc)


def without_secrets(lm):
    """A copy of `lm` without its credentials (api_key, secret headers): what a logged model may
    carry. Loading it elsewhere reads the credentials of that environment (OPENAI_API_KEY, ...)."""
    if lm is None:
        return None
    clean = lm.copy()
    clean.kwargs = {k: ({h: v for h, v in val.items() if not is_secret_name(h)} if isinstance(val, dict) else val)
                    for k, val in lm.kwargs.items() if not is_secret_name(k)}
    return clean


def model_requirements() -> list[str]:
    """What a logged program needs to load: DSPy, MLflow and this runner (its LM engines and, as
    its dependencies, the local backends), pinned to the versions that saved it. Declared, not
    inferred: MLflow's inference imports and traces the model in a subprocess (about 5 s a run)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for package in ("dspy", "mlflow", "dspy-runner"):
        try:
            out.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            out.append(package)
    return out


@contextmanager
def _quiet(*loggers: str):
    """Raise `loggers` to ERROR for the duration: DSPy warns that pickles are unsafe to *load* each
    time a program is saved as one, which the logged model has to be (MLflow's dspy flavour)."""
    saved = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def log_program(program, lm, name: str, example, registered_model_name: str | None, alias: str | None) -> dict:
    """mlflow.dspy.log_model the compiled program as `name`, with `lm` (stripped of secrets) as its
    LM and a signature and input example taken from `example` (a gold dspy.Example: the values of
    the program's input and output fields give the column types, so MLflow need not run the
    program to infer them);
    register it (with alias) when asked."""
    import mlflow
    import mlflow.dspy
    from mlflow.models import infer_signature

    import dspy

    program = program.deepcopy()
    for _, predictor in program.named_predictors():
        if getattr(predictor, "lm", None) is not None:
            predictor.lm = without_secrets(predictor.lm)
    predictors = [p for _, p in program.named_predictors()]
    inputs = {k: example[k] for k in predictors[0].signature.input_fields if k in example}
    outputs = {k: example[k] for k in predictors[-1].signature.output_fields if k in example}
    # MLflow pickles dspy.settings next to the program; the run's callbacks (usage meter,
    # autolog's tracer with its open-span tokens) are not part of the model and may not pickle.
    with dspy.context(lm=without_secrets(lm), callbacks=[]), _quiet("dspy.primitives.base_module",
                                                                      "dspy.dsp.utils.settings"):
        info = mlflow.dspy.log_model(program, name=name, registered_model_name=registered_model_name,
                                      signature=infer_signature(inputs, outputs), input_example=inputs,
                                      use_dspy_model_save=True, pip_requirements=model_requirements())
    out = {"model_uri": info.model_uri}
    if registered_model_name:
        version = info.registered_model_version
        if version is not None and alias:
            mlflow.MlflowClient().set_registered_model_alias(registered_model_name, alias, str(version))
        out.update(registered_model=registered_model_name, version=version, alias=alias)
    return out


def tracking_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri() or os.environ.get("MLFLOW_TRACKING_URI", "")
