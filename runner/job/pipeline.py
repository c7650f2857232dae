"""One job: build the object graph from config, evaluate, compile, re-evaluate, save, log.

Order matters for failure handling: the MLflow run starts before the first LM call, every
phase logs its metrics as soon as it ends, and any exit (error, Ctrl-C) closes the run as
FAILED/KILLED with the Hydra files attached, so nothing already measured is lost.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from runner import compare, tracking
from runner.programs import manifest
from runner.errors import RunnerError
from runner.job.evaluation import evaluate
from runner.logs import quiet_libraries
from runner.job.progress import console, phase
from runner.redaction import config_scrubber
from runner.job.summary import instructions, instructions_table, render_instructions, summary_table
from runner.job.usage import UsageMeter

log = logging.getLogger(__name__)


# Numbers a job checks before it starts, when the key is set: (config key, smallest allowed value).
MINIMUMS = (
    ("model.max_tokens", 1), ("reflection_model.max_tokens", 1), ("model.temperature", 0), ("model.num_retries", 0),
    ("eval.num_threads", 1), ("eval.max_errors", 0),
    ("task.splits.n_train", 1), ("task.splits.n_dev", 1), ("task.splits.n_test", 0),
    ("optimizer.init.max_metric_calls", 1), ("optimizer.init.max_full_evals", 1), ("optimizer.init.num_threads", 1),
    ("optimizer.init.reflection_minibatch_size", 1), ("optimizer.init.num_candidates", 1),
    ("optimizer.compile.num_trials", 1), ("optimizer.init.max_bootstrapped_demos", 0),
    ("optimizer.init.max_labeled_demos", 0), ("optimizer.init.max_rounds", 1), ("optimizer.init.k", 0),
    ("optimizer.init.num_candidate_programs", 1), ("optimizer.init.breadth", 2), ("optimizer.init.depth", 1),
    ("optimizer.init.bsize", 1), ("optimizer.init.max_steps", 1), ("optimizer.init.max_demos", 0),
)


def check_numbers(cfg: DictConfig) -> None:
    """One RunnerError listing every number in the config below its minimum (or not a number)."""
    from omegaconf import OmegaConf

    problems = []
    for key, smallest in MINIMUMS:
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{key}={value!r} is not a number")
        elif value < smallest:
            problems.append(f"{key}={value} (at least {smallest})")
    if problems:
        raise RunnerError("invalid numbers in the config: " + "; ".join(problems),
                          "fix them on the command line or in the YAML (python -m runner --cfg job shows the values)")


def _load_splits(cfg: DictConfig) -> dict:
    splits = instantiate(cfg.task.splits)
    for name in ("train", "dev"):
        if not splits.get(name):
            raise RunnerError(f"task {cfg.task.name!r} produced an empty {name} split",
                              "check the dataset and task.splits sizes")
    return splits


def _check_lm(lm) -> None:
    """One short uncached call, so a missing model or dead endpoint fails in seconds."""
    try:
        lm("Reply with the word OK.", max_tokens=4, cache=False)
    except RunnerError:
        raise
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunnerError(f"the LM {lm.model!r} failed: {msg[:300]}",
                          "check the model group (model=...), that its server/api_base is reachable and its key is set") from exc


def split_of(label: str) -> str:
    """The split a phase label names ("baseline dev" -> "dev")."""
    return label.rsplit(" ", 1)[-1]


def _phase_metrics(prefix: str, usage, seconds: float) -> dict:
    return {f"{prefix}_lm_calls": usage.lm_calls, f"{prefix}_cache_hits": usage.cache_hits,
            f"{prefix}_prompt_tokens": usage.prompt_tokens, f"{prefix}_completion_tokens": usage.completion_tokens,
            f"{prefix}_lm_errors": usage.lm_errors, f"{prefix}_truncated": usage.truncated, f"{prefix}_wall_s": seconds}


def _backend_metrics(total) -> dict:
    """In-run LM benchmark from uncached calls: latency per call and decode throughput."""
    fresh = total.lm_calls - total.cache_hits
    if fresh <= 0 or total.lm_seconds <= 0:
        return {}
    return {"lm_latency_mean_s": total.lm_seconds / total.lm_calls,
            "lm_completion_tokens_per_s": total.completion_tokens / total.lm_seconds,
            "lm_total_tokens_per_s": total.tokens / total.lm_seconds}


def _backend_choice(lm) -> dict:
    """What `model=auto` picked and why (empty for an explicit model group option)."""
    return dict(getattr(getattr(lm, "engine", None), "selection", None) or {})


def _program_recipe(cfg: DictConfig, program) -> tuple[dict, str | None]:
    """The program config to put in the new manifest, and where a loaded program came from.

    A loaded program (program=models:/... / a path) must not record `runner.programs.loading.load_program`
    as its recipe, or the saved program could only be rebuilt by loading its ancestor: it
    records the module config of the manifest it was loaded with, on this task's signature."""
    from runner.programs.loading import manifest_of

    loaded = manifest_of(program)
    if not loaded:
        return OmegaConf.to_container(cfg.program, resolve=True), None
    recipe = dict(loaded["program"])
    if isinstance(recipe.get("signature"), dict):
        recipe["signature"] = {**recipe["signature"], "spec": cfg.task.signature}
    return recipe, loaded.get("source")


def run(cfg: DictConfig) -> float:
    """Run one experiment; returns the compiled program's score on `eval.split` (for sweepers)."""
    import dspy

    quiet_libraries()
    check_numbers(cfg)
    instantiate(cfg.cache)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    choices = dict(HydraConfig.get().runtime.choices)

    # Everything that can fail without an LM fails here, before the MLflow run starts.
    splits = _load_splits(cfg)
    program = instantiate(cfg.program)
    metric = instantiate(cfg.metric)
    optimizer_factory = instantiate(cfg.optimizer.init)

    scrubber = config_scrubber(cfg)
    resolved = tracking.resolved_config(cfg, scrubber)
    tags = {"task": cfg.task.name, "optimizer": cfg.optimizer.name, "program": choices.get("program"),
            "model_choice": choices.get("model"), "run_dir": str(run_dir)}
    git = manifest.git_state()
    if git:
        tags.update({"git.commit": git["commit"], "git.dirty": git["dirty"]})
    tags.update({f"version.{pkg}": v for pkg, v in manifest.versions().items() if v})
    if cfg.program.get("uri"):
        tags["program_uri"] = cfg.program.uri
    if HydraConfig.get().mode.name == "MULTIRUN":
        tags["sweep_dir"] = HydraConfig.get().sweep.dir
    active = tracking.start(cfg.tracking, cfg.tracking.run_name, scrubber.tree(tags), scrubber)
    status = "FAILED"
    try:
        tracking.log_params(tracking.flatten(resolved))
        tracking.log_params({f"choice.{k}": str(v) for k, v in choices.items() if not k.startswith("hydra")})
        tracking.log_params({"data.n_train": len(splits["train"]), "data.n_dev": len(splits["dev"]),
                             "data.n_test": len(splits.get("test") or [])})
        tracking.log_datasets(splits, cfg.task.name, cfg.task.get("answer_field"))

        meter = UsageMeter()
        lm = instantiate(cfg.model)
        # keep the callbacks already installed (mlflow.dspy.autolog adds its tracer there)
        dspy.configure(lm=lm, adapter=instantiate(cfg.adapter), callbacks=[*dspy.settings.callbacks, meter])
        backend = _backend_choice(lm)
        tracking.log_params({"lm.model": lm.model, **{f"backend.{k}": str(v) for k, v in (backend or {}).items()
                                                      if k in ("backend", "reason")}})
        console.print(f"[bold]LM[/] {lm.model}")
        if cfg.lm_check:
            _check_lm(lm)

        rows, metrics, evaluated, table = [], {}, {}, []
        eval_split = splits[cfg.eval.split]

        def timed_eval(label: str, prog, examples, prefix: str):
            before, t0 = meter.snapshot(), time.perf_counter()
            res = evaluate(prog, examples, metric, meter, title=label, num_threads=cfg.eval.num_threads,
                           max_errors=cfg.eval.max_errors)
            used, secs = meter.snapshot() - before, time.perf_counter() - t0
            if res["n"] and res["failed"] == res["n"] and used.lm_errors:
                last = meter.last_error
                raise RunnerError(f"{label}: all {res['n']} examples failed"
                                  + (f"; last LM error: {str(last).splitlines()[0][:200]}" if last else ""),
                                  "check that the LM server is up and the model group is right")
            if res["failed"]:
                log.warning("%s: %d/%d examples produced no parseable output (scored 0)", label, res["failed"], res["n"])
            m = {f"{prefix}_score": res["score"], f"{prefix}_failed": res["failed"], **_phase_metrics(prefix, used, secs)}
            tracking.log_metrics(m)
            metrics.update(m)
            evaluated[prefix] = {"split": split_of(label), "n": res["n"], "parse_failures": res["failed"],
                                 "truncated": used.truncated}
            examples = tracking.example_rows(prefix, split_of(label), res["rows"])
            with open(run_dir / compare.EXAMPLES_FILE, "a", encoding="utf-8") as fh:
                fh.writelines(json.dumps(scrubber.tree(row), default=str) + "\n" for row in examples)
            table.extend(examples)
            if cfg.tracking.autolog:
                tracking.log_assessments(res["rows"], f"{prefix}_metric")
            if used.truncated:
                log.warning("%s: %d replies were cut at max_tokens (model.max_tokens=%s)", label, used.truncated,
                            cfg.model.get("max_tokens"))
            rows.append((label, res["score"], used, secs))
            return res

        test_split = splits.get("test") if cfg.eval.test else None
        timed_eval(f"baseline {cfg.eval.split}", program, eval_split, "baseline")
        if test_split:
            timed_eval("baseline test", program, test_split, "baseline_test")

        before, t0 = meter.snapshot(), time.perf_counter()
        optimizer = optimizer_factory()  # built now: MIPROv2 takes dspy.settings.lm as its task model
        compile_kwargs = OmegaConf.to_container(cfg.optimizer.compile, resolve=True)
        if cfg.optimizer.valset:  # the optimizer selects its candidates on the dev split
            compile_kwargs["valset"] = splits["dev"]
        with phase(f"compile ({cfg.optimizer.name})", meter):
            try:
                compiled = optimizer.compile(program.deepcopy(), trainset=splits["train"], **compile_kwargs)
            except AssertionError as exc:  # DSPy optimizers check their arguments with assert
                raise RunnerError(f"optimizer {cfg.optimizer.name} refused its configuration: {exc}",
                                  "adjust optimizer.init / optimizer.compile or the task.splits sizes") from exc
        used, secs = meter.snapshot() - before, time.perf_counter() - t0
        m = _phase_metrics("compile", used, secs)
        tracking.log_metrics(m)
        metrics.update(m)
        rows.append((f"compile ({cfg.optimizer.name})", None, used, secs))
        found = instructions(compiled, program)
        if found:
            tracking.log_text(render_instructions(found), "instructions.md")
            console.print(instructions_table(found))

        result = timed_eval(f"compiled {cfg.eval.split}", compiled, eval_split, "compiled")
        if test_split:
            timed_eval("compiled test", compiled, test_split, "compiled_test")

        total = meter.snapshot()
        metrics.update(_backend_metrics(total))
        metrics["improvement"] = metrics["compiled_score"] - metrics["baseline_score"]
        if test_split:
            metrics["test_improvement"] = metrics["compiled_test_score"] - metrics["baseline_test_score"]
        tracking.log_metrics({k: metrics[k] for k in ("improvement", "test_improvement", *_backend_metrics(total))
                              if k in metrics})
        tracking.log_table(scrubber.tree(table), compare.EXAMPLES_TABLE)
        summary = (f"{cfg.task.name} x {cfg.optimizer.name} on {lm.model}: {cfg.eval.split} "
                   f"{metrics['baseline_score']:.3f} -> {metrics['compiled_score']:.3f}")
        if test_split:
            summary += f", test {metrics['baseline_test_score']:.3f} -> {metrics['compiled_test_score']:.3f}"
        tracking.describe(summary)

        scores = {k: v for k, v in metrics.items() if k.endswith("_score") or k == "improvement"}
        program_cfg, loaded_from = _program_recipe(cfg, program)
        man = manifest.build_manifest(compiled, program_cfg=program_cfg,
                                      task={"name": cfg.task.name, "signature": cfg.task.signature},
                                      config=resolved, scores=scores, seed=cfg.seed, model=lm.model, backend=backend,
                                      evaluated=evaluated)
        if loaded_from:
            man["loaded_from"] = loaded_from
        saved = manifest.save(compiled, run_dir / "program", man)
        tracking.log_dir(saved, manifest.STATE_ARTIFACT)
        if cfg.tracking.log_model:
            info = tracking.log_program(compiled, lm, f"{cfg.task.name}-{cfg.optimizer.name}", splits["dev"][0],
                                        cfg.tracking.registered_model_name if cfg.register else None,
                                        cfg.tracking.alias)
            log.info("logged model %s", info)
        caption = (f"{cfg.optimizer.name} picked its candidate on the {cfg.eval.split} split: the test rows are "
                   "held out, the compiled dev score is optimistic") if cfg.optimizer.valset else None
        console.print(summary_table(rows, title=f"{cfg.task.name} x {cfg.optimizer.name} on {lm.model}", caption=caption))
        console.print(f"saved program to {saved}  |  MLflow run {active.info.run_id} at {tracking.tracking_uri()}")
        status = "FINISHED"
        return float(result["score"])
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracking.log_dir(run_dir / ".hydra", "hydra")
        tracking.finish(status)
