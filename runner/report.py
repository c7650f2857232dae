"""`python -m runner.report <multirun dir>`: score by optimizer x task for a whole sweep.

runner.job.summary prints one job's phases; this reads every job dir of a multirun (each holds
.hydra/ and, when it finished, program/manifest.json with its scores) and writes:
  report.md   Markdown tables, means over the jobs that share optimizer x task: the dev split
              (compiled score, change vs. the uncompiled program, the uncompiled baseline as its
              own row), the held-out test split where jobs scored it (uncompiled -> compiled), and
              the parse failures of every evaluation
  report.png  grouped bars of the dev scores (matplotlib, Agg backend: no display needed)
  report.html both in one self-contained page to share (the plot inlined)
into the sweep dir, prints the table with rich, and logs all three plus one metric per cell to a new
MLflow run in the experiment "dspy-runner-reports". Jobs without a manifest count as failed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from runner.compare import html
from runner.errors import RunnerError, exit_with

EXPERIMENT = "dspy-runner-reports"


def collect(sweep_dir: Path) -> list[dict]:
    """One row per job dir: task, optimizer, scores and parse failures (None when it did not finish)."""
    from omegaconf import OmegaConf

    jobs = []
    for hydra_dir in sorted(sweep_dir.rglob(".hydra")):
        job = hydra_dir.parent
        if not (hydra_dir / "config.yaml").is_file():
            continue
        choices = {}
        if (hydra_dir / "hydra.yaml").is_file():
            choices = OmegaConf.to_container(OmegaConf.load(hydra_dir / "hydra.yaml").hydra.runtime.choices)
        man_file = job / "program" / "manifest.json"
        man = json.loads(man_file.read_text(encoding="utf-8")) if man_file.is_file() else {}
        cfg = OmegaConf.load(hydra_dir / "config.yaml")
        scores = man.get("scores") or {}
        evaluated = man.get("evaluated") or {}
        jobs.append({"dir": str(job.relative_to(sweep_dir)),
                     "task": (man.get("task") or {}).get("name") or cfg.get("task", {}).get("name") or choices.get("task"),
                     "optimizer": cfg.get("optimizer", {}).get("name") or choices.get("optimizer"),
                     "selects_on_dev": bool(cfg.get("optimizer", {}).get("valset", False)),
                     "compiled": scores.get("compiled_score"), "baseline": scores.get("baseline_score"),
                     "compiled_test": scores.get("compiled_test_score"), "baseline_test": scores.get("baseline_test_score"),
                     "parse_failures": sum(int(e.get("parse_failures") or 0) for e in evaluated.values()),
                     "truncated": sum(int(e.get("truncated") or 0) for e in evaluated.values()),
                     "evaluated": sum(int(e.get("n") or 0) for e in evaluated.values()),
                     "ok": bool(man)})
    if not jobs:
        raise RunnerError(f"no job dirs (with .hydra/) under {sweep_dir}", "pass a dir from outputs/multirun/<date>/<time>")
    return jobs


SCORES = ("compiled", "baseline", "compiled_test", "baseline_test")


def aggregate(jobs: list[dict]) -> dict[tuple[str, str], dict]:
    """(optimizer, task) -> mean of each score, jobs, failed jobs, parse failures / evaluated examples."""
    cells: dict[tuple[str, str], dict] = defaultdict(
        lambda: {**{k: [] for k in SCORES}, "failed": 0, "parse_failures": 0, "truncated": 0, "evaluated": 0,
                 "selects_on_dev": False})
    for job in jobs:
        cell = cells[(str(job["optimizer"]), str(job["task"]))]
        if not job["ok"] or job["compiled"] is None:
            cell["failed"] += 1
            continue
        for k in SCORES:
            if job[k] is not None:
                cell[k].append(job[k])
        cell["parse_failures"] += job["parse_failures"]
        cell["truncated"] += job["truncated"]
        cell["evaluated"] += job["evaluated"]
        cell["selects_on_dev"] |= job["selects_on_dev"]
    out = {}
    for key, c in cells.items():
        out[key] = {**{k: statistics.fmean(c[k]) if c[k] else None for k in SCORES},
                    **{f"{k}_se": stderr(c[k]) for k in SCORES},
                    "n": len(c["compiled"]), "failed": c["failed"], "parse_failures": c["parse_failures"],
                    "truncated": c["truncated"], "evaluated": c["evaluated"], "selects_on_dev": c["selects_on_dev"]}
    return out


def stderr(values: list[float]) -> float | None:
    """Standard error of the mean over a cell's jobs (e.g. seeds): sample stdev / sqrt(n); None for n < 2."""
    return statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else None


def _pm(cell: dict, key: str) -> str:
    se = cell.get(f"{key}_se")
    return f"{cell[key]:.3f}" + (f" ± {se:.3f}" if se is not None else "")


def _axes(cells) -> tuple[list[str], list[str]]:
    return sorted({o for o, _ in cells}), sorted({t for _, t in cells})


def _fmt(cell: dict | None) -> str:
    if not cell:
        return "—"
    if cell["compiled"] is None:
        return f"failed ({cell['failed']})"
    text = _pm(cell, "compiled")
    if cell["baseline"] is not None:
        text += f" ({cell['compiled'] - cell['baseline']:+.3f})"
    extra = [f"n={cell['n']}"] if cell["n"] > 1 else []
    extra += [f"{cell['failed']} failed"] if cell["failed"] else []
    return text + (f" [{', '.join(extra)}]" if extra else "")


def _fmt_test(cell: dict | None) -> str:
    if not cell or cell.get("compiled_test") is None:
        return "—"
    text = _pm(cell, "compiled_test")
    if cell.get("baseline_test") is not None:
        text = f"{_pm(cell, 'baseline_test')} → {text} ({cell['compiled_test'] - cell['baseline_test']:+.3f})"
    return text


def _baselines(cells, tasks: list[str]) -> list[str]:
    out = []
    for t in tasks:
        values = [c["baseline"] for (_, task), c in cells.items() if task == t and c["baseline"] is not None]
        out.append(f"{statistics.fmean(values):.3f}" if values else "—")
    return out


def markdown(cells, sweep_dir: Path, n_jobs: int) -> str:
    optimizers, tasks = _axes(cells)
    on_dev = sorted(o for o in optimizers if any(c["selects_on_dev"] for (opt, _), c in cells.items() if opt == o))
    failed_jobs = sum(c["failed"] for c in cells.values())
    lines = [f"## Sweep report: {sweep_dir.name}", "",
             f"{n_jobs} jobs under `{sweep_dir}`" + (f", {failed_jobs} failed" if failed_jobs else "") +
             ". Scores are the task metric's mean in [0, 1], averaged over the jobs of a cell (e.g. seeds); "
             "± is the standard error of that mean over the cell's n jobs.", "",
             "### dev split: compiled score (change vs. the uncompiled program)", ""]
    if on_dev:
        lines += [f"{', '.join(on_dev)} pick their candidates on this split (marked *), so their dev scores are "
                  "optimistic; the held-out test table below is the fair comparison.", ""]
    lines += ["| optimizer | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks),
              "| *uncompiled baseline* | " + " | ".join(_baselines(cells, tasks)) + " |"]
    for o in optimizers:
        lines.append(f"| {o}{'*' if o in on_dev else ''} | " + " | ".join(_fmt(cells.get((o, t))) for t in tasks) + " |")
    tested = [o for o in optimizers if any((cells.get((o, t)) or {}).get("compiled_test") is not None for t in tasks)]
    if tested:
        lines += ["", "### held-out test split: uncompiled → compiled (change)", "",
                  "| optimizer | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
        for o in tested:
            lines.append(f"| {o} | " + " | ".join(_fmt_test(cells.get((o, t))) for t in tasks) + " |")
    evaluated = sum(c["evaluated"] for c in cells.values())
    failures = sum(c["parse_failures"] for c in cells.values())
    truncated = sum(c["truncated"] for c in cells.values())
    lines += ["", "### parse failures", "",
              f"{failures} of {evaluated} evaluated examples (every evaluation of every job: baseline and compiled, "
              f"dev and test) gave no parseable output; {truncated} replies in those evaluations were cut at max_tokens."]
    worst = sorted(((c["parse_failures"], c["truncated"], o, t) for (o, t), c in cells.items()
                    if c["parse_failures"] or c["truncated"]), reverse=True)
    if worst:
        lines += ["", "| optimizer | task | parse failures | cut at max_tokens |", "|---|---|---:|---:|"]
        lines += [f"| {o} | {t} | {n} | {k} |" for n, k, o, t in worst]
    return "\n".join(lines) + "\n"


def rich_table(cells, title: str):
    from rich.table import Table

    optimizers, tasks = _axes(cells)
    table = Table(title=title)
    table.add_column("optimizer")
    for t in tasks:
        table.add_column(t, justify="right")
    for o in optimizers:
        table.add_row(o, *[_fmt(cells.get((o, t))) for t in tasks])
    return table


def plot(cells, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    optimizers, tasks = _axes(cells)
    width = 0.8 / max(len(tasks), 1)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(optimizers) * max(len(tasks), 1) ** 0.5 + 2), 3.6))
    for i, t in enumerate(tasks):
        xs = [j + i * width - 0.4 + width / 2 for j in range(len(optimizers))]
        ys = [(cells.get((o, t)) or {}).get("compiled") or 0.0 for o in optimizers]
        errs = [(cells.get((o, t)) or {}).get("compiled_se") or 0.0 for o in optimizers]
        ax.bar(xs, ys, width, label=t, yerr=errs if any(errs) else None, capsize=2)
        base = [(cells.get((o, t)) or {}).get("baseline") for o in optimizers]
        bx = [x for x, b in zip(xs, base) if b is not None]
        ax.scatter(bx, [b for b in base if b is not None], marker="_", s=200, color="black",
                   label="baseline" if i == 0 else None, zorder=3)
    ax.set_xticks(range(len(optimizers)), optimizers, rotation=20, ha="right")
    ax.set_ylabel("compiled score")
    ax.set_ylim(0, 1.05)
    ax.set_title("score by optimizer × task")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def log_to_mlflow(cells, sweep_dir: Path, files: list[Path], tracking_uri: str | None, n_jobs: int) -> str:
    """A new run in the reports experiment; returns its run id."""
    import mlflow

    from runner.settings import tracking_config
    from runner.tracking import use_experiment

    use_experiment(tracking_config(tracking_uri), EXPERIMENT)
    with mlflow.start_run(run_name=f"report-{sweep_dir.parent.name}-{sweep_dir.name}") as run:
        mlflow.log_params({"sweep_dir": str(sweep_dir.resolve()), "n_jobs": n_jobs})
        mlflow.log_metrics({f"{k}_score{se}.{t}.{o}": c[k + se] for (o, t), c in cells.items() for k in SCORES
                            for se in ("", "_se") if c[k + se] is not None})
        mlflow.log_metric("parse_failures", sum(c["parse_failures"] for c in cells.values()))
        for f in files:
            mlflow.log_artifact(str(f))
        return run.info.run_id


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m runner.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", help="a multirun dir: outputs/multirun/<date>/<time>")
    parser.add_argument("--out-dir", help="where report.md / .png / .html go (default: the sweep dir)")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log the report to MLflow")
    parser.add_argument("--tracking-uri", help="MLflow store (default: the runner's, conf/tracking/mlflow.yaml)")
    args = parser.parse_args(argv)
    try:
        sweep_dir = Path(args.sweep_dir)
        if not sweep_dir.is_dir():
            raise RunnerError(f"{sweep_dir} is not a directory", "pass a dir from outputs/multirun/<date>/<time>")
        jobs = collect(sweep_dir)
        cells = aggregate(jobs)
        out_dir = Path(args.out_dir or sweep_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        md = out_dir / "report.md"
        md.write_text(markdown(cells, sweep_dir, len(jobs)), encoding="utf-8")
        png = plot(cells, out_dir / "report.png")
        page = out_dir / "report.html"
        page.write_text(html(md.read_text(encoding="utf-8"), f"dspy-runner report: {sweep_dir.name}",
                             {"report.png": png.read_bytes()}), encoding="utf-8")
        from rich.console import Console

        Console().print(rich_table(cells, f"{sweep_dir}: compiled score (Δ vs baseline)"))
        print(f"wrote {md}, {png} and {page}")
        if not args.no_mlflow:
            run_id = log_to_mlflow(cells, sweep_dir, [md, png, page], args.tracking_uri, len(jobs))
            print(f"logged to MLflow experiment {EXPERIMENT!r}, run {run_id}")
    except RunnerError as err:
        exit_with(err)


if __name__ == "__main__":
    main(sys.argv[1:])
