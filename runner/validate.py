"""`python -m runner.validate`: check every task x metric x program (x adapter) without loading an LM.

For each combination the config is composed with Hydra's compose API (exactly as `python -m runner
task=... metric=... program=...` would), then the signature, program, metric and output adapters
are instantiated and checked:

* signature: has inputs and outputs, every field has a description;
* dataset (once per task): train/dev/test are non-empty, every example carries every signature
  field, inputs are marked, and no example (by its inputs) appears in two splits;
* metric: on each dev/test example, the gold labels -- formatted by every output adapter and parsed
  back, so typed outputs (ints, floats, Literals) really parse -- score >= 0.99; a garbled, an empty
  and a missing (None) prediction score within [0, 1] without raising.

The `model` group is never instantiated. `metric=llm_judge` (needs the model) and `program=load`
(needs a saved program) are composed but not instantiated. `metric=numeric` on a task whose answer
field is not numeric is reported as n/a, not as a failure. Exits 1 on any problem.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import signatures  # noqa: E402
from runner.settings import CONF_DIR as _CONF_DIR  # noqa: E402

CONF_DIR = Path(_CONF_DIR)
EXAMPLES = Path(signatures.__file__).resolve().parent / "data" / "examples"
CUSTOM_SIGNATURE = "question -> answer"
NOT_INSTANTIATED = {("metric", "llm_judge"): "needs the model group (an LM)",
                    ("program", "load"): "needs a saved program (program.uri)"}
GARBLED = "<<garbled: not a valid answer>>"


@dataclass
class Check:
    task: str
    metric: str
    program: str
    status: str = "ok"          # ok | FAIL | n/a
    notes: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.status = "FAIL"
        self.notes.append(message)


def options(group: str) -> list[str]:
    """The options of a config group: the YAML files in conf/<group>/."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def custom_data(metric: str) -> Path:
    """The committed example file for task=custom: numeric answers for metric=numeric."""
    return EXAMPLES / ("arithmetic.jsonl" if metric == "numeric" else "qa.jsonl")


def overrides_for(task: str, metric: str, program: str, adapter: str | None = None) -> list[str]:
    out = [f"task={task}", f"metric={metric}", f"program={program}"]
    if adapter:
        out.append(f"adapter={adapter}")
    if task == "custom":
        out += [f"task.signature='{CUSTOM_SIGNATURE}'", f"task.data={custom_data(metric)}"]
    return out


def compose(task: str, metric: str, program: str, adapter: str | None = None, extra=()):
    """The composed root config for one combination (Hydra's compose API on conf/)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=overrides_for(task, metric, program, adapter) + list(extra))


def check_signature(sig, require_descriptions: bool = True) -> list[str]:
    """Inputs and outputs present, every field described (an inline "a -> b" signature has no
    descriptions to check)."""
    problems = []
    if not sig.input_fields:
        problems.append("signature has no input fields")
    if not sig.output_fields:
        problems.append("signature has no output fields")
    for name, f in {**sig.input_fields, **sig.output_fields}.items():
        if not require_descriptions:
            break
        desc = (f.json_schema_extra or {}).get("desc", "")
        if not desc or desc == f"${{{name}}}":  # dspy's placeholder for an undescribed field
            problems.append(f"field {name!r} has no description")
    return problems


def check_splits(splits, sig) -> list[str]:
    """Non-empty train/dev/test, every field present, inputs marked, no example in two splits."""
    problems = []
    if not isinstance(splits, dict):
        return [f"splits is a {type(splits).__name__}, not a dict of train/dev/test"]
    inputs, outputs = set(sig.input_fields), set(sig.output_fields)
    seen: dict = {}
    for name in ("train", "dev", "test"):
        part = splits.get(name)
        if not part:
            problems.append(f"split {name!r} is empty")
            continue
        for i, ex in enumerate(part):
            missing = sorted(n for n in inputs | outputs if ex.get(n) is None)
            if missing:
                problems.append(f"{name}[{i}] lacks fields {missing}")
            try:
                marked = set(ex.inputs().keys())
            except ValueError:          # with_inputs() was never called
                marked = set()
            if marked != inputs:
                problems.append(f"{name}[{i}] inputs are {sorted(marked)}, expected {sorted(inputs)}")
            key = tuple(sorted((k, repr(ex.get(k))) for k in inputs))
            if key in seen and seen[key] != name:
                problems.append(f"{name}[{i}] also appears in split {seen[key]!r}")
            seen.setdefault(key, name)
    return problems


def round_trip(adapter, sig, labels: dict) -> dict:
    """Format gold outputs as `adapter` writes an LM reply, then parse them back with the same adapter."""
    text = adapter.format_assistant_message_content(sig, labels)
    return adapter.parse(sig, text)


def _score(metric, example, pred) -> float:
    from runner.dspy_ext.metrics import score_of

    return score_of(metric(example, pred))


def check_metric(metric, sig, examples, adapters: dict, numeric_field: str | None = None) -> tuple[list[str], str | None]:
    """Gold labels (through every adapter) score >= 0.99; bad predictions score in [0, 1] without raising.

    Returns (problems, n/a reason)."""
    import dspy

    from runner.dspy_ext.metrics import Numeric, last_number

    problems = []
    outputs = list(sig.output_fields)
    if isinstance(metric, Numeric):
        fld = metric.field or outputs[-1]
        if any(last_number(ex.get(fld)) is None for ex in examples):
            return [], f"answer field {fld!r} is not numeric"
    for i, ex in enumerate(examples):
        labels = {k: ex.get(k) for k in outputs}
        candidates = {"labels": labels}
        for name, adapter in adapters.items():
            try:
                candidates[name] = round_trip(adapter, sig, labels)
            except Exception as exc:
                problems.append(f"example {i}: gold outputs do not parse with adapter {name}: {exc!s:.160}")
        for source, values in candidates.items():
            try:
                s = _score(metric, ex, dspy.Prediction(**values))
            except Exception as exc:
                problems.append(f"example {i}: metric raised on the gold ({source}): {type(exc).__name__}: {exc!s:.160}")
                continue
            if not s >= 0.99:
                problems.append(f"example {i}: gold ({source}) scores {s:.3f} < 0.99")
        for label, pred in (("garbled", dspy.Prediction(**{k: GARBLED for k in outputs})),
                            ("empty", dspy.Prediction()), ("None", None)):
            try:
                s = _score(metric, ex, pred)
            except Exception as exc:
                problems.append(f"example {i}: metric raised on a {label} prediction: {type(exc).__name__}: {exc!s:.160}")
                continue
            if not 0.0 <= s <= 1.0:
                problems.append(f"example {i}: {label} prediction scores {s} outside [0, 1]")
        if len(problems) > 5:
            break
    return problems, None


def validate(tasks=None, metrics=None, programs=None, adapters=None, max_examples: int | None = None) -> list[Check]:
    """Run every check; returns one Check per task x metric x program."""
    from hydra.utils import instantiate

    from runner.programs.signature import resolve_signature

    tasks, metrics = tasks or options("task"), metrics or options("metric")
    programs, adapter_names = programs or options("program"), adapters or options("adapter")
    checks = []
    task_cache: dict = {}
    metric_cache: dict = {}
    adapter_objs: dict | None = None
    for task in tasks:
        for metric_name in metrics:
            for program in programs:
                check = Check(task, metric_name, program)
                checks.append(check)
                try:
                    cfg = compose(task, metric_name, program)
                except Exception as exc:
                    check.fail(f"compose failed: {type(exc).__name__}: {exc!s:.200}")
                    continue
                if adapter_objs is None:
                    adapter_objs = {}
                    for name in adapter_names:
                        try:
                            adapter_objs[name] = instantiate(compose(task, metric_name, program, name).adapter)
                        except Exception as exc:
                            check.fail(f"adapter {name} failed to instantiate: {type(exc).__name__}: {exc!s:.200}")
                try:
                    sig = resolve_signature(cfg.task.signature)
                except Exception as exc:
                    check.fail(f"signature: {exc!s:.200}")
                    continue
                inline = isinstance(cfg.task.signature, str) and "->" in cfg.task.signature
                for p in check_signature(sig, require_descriptions=not inline):
                    check.fail(p)

                key = (task, metric_name == "numeric")
                if key not in task_cache:
                    try:
                        t0 = time.perf_counter()
                        splits = instantiate(cfg.task.splits)
                        task_cache[key] = (splits, check_splits(splits, sig), time.perf_counter() - t0)
                    except Exception as exc:
                        task_cache[key] = (None, [f"splits failed to load: {type(exc).__name__}: {exc!s:.200}"], 0.0)
                splits, split_problems, load_s = task_cache[key]
                for p in split_problems:
                    check.fail(p)
                if splits:
                    check.notes.append(f"splits {len(splits.get('train') or [])}/{len(splits.get('dev') or [])}/"
                                       f"{len(splits.get('test') or [])} ({load_s:.1f}s)")

                if ("program", program) in NOT_INSTANTIATED:
                    check.notes.append(f"program not instantiated: {NOT_INSTANTIATED[('program', program)]}")
                else:
                    try:
                        prog = instantiate(cfg.program)
                        if not prog.predictors():
                            check.fail("program has no predictors")
                    except Exception as exc:
                        check.fail(f"program failed to instantiate: {type(exc).__name__}: {exc!s:.200}")

                if ("metric", metric_name) in NOT_INSTANTIATED:
                    check.notes.append(f"metric not instantiated: {NOT_INSTANTIATED[('metric', metric_name)]}")
                    continue
                try:
                    metric = instantiate(cfg.metric)
                except Exception as exc:
                    check.fail(f"metric failed to instantiate: {type(exc).__name__}: {exc!s:.200}")
                    continue
                if not splits:
                    continue
                # the metric checks do not depend on the program: run them once per task x metric
                mkey = (task, metric_name)
                if mkey not in metric_cache:
                    examples = (splits.get("dev") or []) + (splits.get("test") or [])
                    if max_examples:
                        examples = examples[:max_examples]
                    metric_cache[mkey] = (*check_metric(metric, sig, examples, adapter_objs or {}), len(examples))
                problems, na, n = metric_cache[mkey]
                for p in problems:
                    check.fail(p)
                if na and check.status == "ok":
                    check.status = "n/a"
                    check.notes.append(f"metric n/a: {na}")
                elif not problems:
                    check.notes.append(f"metric: gold >= 0.99 on {n} examples x {1 + len(adapter_objs or {})} "
                                       f"formats; bad predictions in [0, 1]")
    return checks


def render(checks: list[Check]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="dspy-runner config validation", show_lines=False)
    for col in ("task", "metric", "program", "status", "notes"):
        table.add_column(col, overflow="fold")
    style = {"ok": "green", "FAIL": "bold red", "n/a": "yellow"}
    for c in checks:
        table.add_row(c.task, c.metric, c.program, f"[{style[c.status]}]{c.status}[/]", "; ".join(c.notes))
    Console(width=max(140, Console().width)).print(table)


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m runner.validate", description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", help="comma-separated task options (default: all)")
    parser.add_argument("--metrics", help="comma-separated metric options (default: all)")
    parser.add_argument("--programs", help="comma-separated program options (default: all)")
    args = parser.parse_args(argv)
    pick = {k: v.split(",") for k, v in (("tasks", args.tasks), ("metrics", args.metrics),
                                         ("programs", args.programs)) if v}
    t0 = time.perf_counter()
    checks = validate(**pick)
    render(checks)
    failed = [c for c in checks if c.status == "FAIL"]
    print(f"{len(checks)} combinations, {len(failed)} failed, "
          f"{sum(c.status == 'n/a' for c in checks)} n/a, {time.perf_counter() - t0:.1f}s")
    return 1 if failed else 0


def cli() -> None:
    """The `dspy-runner-validate` console script."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
