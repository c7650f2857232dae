"""`python -m runner.diff`: what a change does to experiments, as Markdown for a pull request.

  python -m runner.diff --base origin/main              # which presets' resolved configs a change alters
  python -m runner.diff RUN_A RUN_B [-o diff.md]        # two runs: config, metrics, per-example flips
  python -m runner.diff RUN [-o diff.md]                # one run: its baseline vs its compiled program
  python -m runner.diff RUN_A RUN_B --fail-on-regression 0.02   # exit 1 on a significant drop (CI)

`--base REV` composes the default config and every preset in conf/experiment/ as they are at the
git revision REV and in the work tree, and lists, per experiment, the resolved keys that change
(old -> new), the presets added and removed, and how many are unchanged. REV's conf/ is read with
`git archive` into a temporary directory: the user's checkout is never touched.

A run is a run dir (outputs/runs/... or a multirun job dir) or an MLflow run id (or runs:/ID).
Config comes from the run dir's program/manifest.json (the resolved config) or, failing that,
.hydra/config.yaml; for an MLflow run from its params. Both are flattened to the same dotted
keys (`tracking.flatten`), so a run dir can be compared with an MLflow run. Metrics come from
the manifest's scores or the MLflow run's metrics. Per-example rows (examples.jsonl, or the
run's examples.json table in MLflow) are paired by example: which examples changed score, with
inputs, both outputs and the metric's feedback, and a paired bootstrap interval and p-value of
the difference (runner.compare). `-o FILE.md` also writes FILE.html, a self-contained page;
`--mlflow` logs both to a run of the experiment dspy-runner-reports (beside the sweep reports).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from runner import compare
from runner.errors import RunnerError, exit_with

RUN_ID = re.compile(r"^(runs:/)?([0-9a-f]{32})/?$")
# Keys that differ between any two runs and say nothing about the experiment.
NOISE = re.compile(r"^(paths\.|hydra\.|tracking\.run_name$|run_dir$)")


@dataclass
class RunView:
    label: str
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)  # per evaluated example (runner.compare)


def _flatten(tree) -> dict[str, str]:
    from runner.tracking import flatten

    return flatten(tree)


def _hydra_node(hydra_dir: Path):
    from omegaconf import OmegaConf

    f = hydra_dir / "hydra.yaml"
    return OmegaConf.load(f).get("hydra") if f.is_file() else None


def _resolve_hydra_files(hydra_dir: Path) -> dict:
    """.hydra/config.yaml resolved as the job saw it: `${hydra:...}` is answered from the
    run's own .hydra/hydra.yaml (cwd, output dir, choices); unresolvable values stay raw."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(hydra_dir / "config.yaml")
    node = _hydra_node(hydra_dir)
    OmegaConf.register_new_resolver("hydra", lambda key: OmegaConf.select(node, key) if node is not None else None,
                                    replace=True)
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:
        return OmegaConf.to_container(cfg, resolve=False)


def _choices(hydra_dir: Path) -> dict[str, str]:
    """choice.<group> as the pipeline logs them to MLflow, so dirs and run ids compare alike."""
    node = _hydra_node(hydra_dir)
    if node is None:
        return {}
    choices = node.get("runtime", {}).get("choices", {}) or {}
    return {f"choice.{k}": str(v) for k, v in choices.items() if not str(k).startswith("hydra")}


def from_dir(path: Path) -> RunView:
    """Resolved config + scores of a run dir (or its program/ dir)."""
    run_dir = path.parent if (path / "manifest.json").is_file() and path.name == "program" else path
    man_file = run_dir / "program" / "manifest.json"
    view = RunView(label=str(path))
    if man_file.is_file():
        man = json.loads(man_file.read_text(encoding="utf-8"))
        view.params = _flatten(man.get("config") or {})
        view.metrics = {k: float(v) for k, v in (man.get("scores") or {}).items() if v is not None}
    cfg_file = run_dir / ".hydra" / "config.yaml"
    if not view.params and cfg_file.is_file():
        view.params = _flatten(_resolve_hydra_files(run_dir / ".hydra"))
    view.params.update(_choices(run_dir / ".hydra"))
    view.rows = compare.read_rows(run_dir)
    if not view.params and not view.metrics:
        raise RunnerError(f"{path} has neither program/manifest.json nor .hydra/config.yaml",
                          "pass a run dir from outputs/runs/ or outputs/multirun/, or an MLflow run id")
    return view


def from_mlflow(run_id: str, tracking_uri: str | None) -> RunView:
    import mlflow

    from runner.settings import tracking_uri as default_uri
    from runner.tracking import connect

    connect(default_uri(tracking_uri))
    try:
        run = mlflow.MlflowClient().get_run(run_id)
    except Exception as exc:
        raise RunnerError(f"no MLflow run {run_id} at {mlflow.get_tracking_uri()}",
                          "pass --tracking-uri (or MLFLOW_TRACKING_URI) for the store that holds it") from exc
    name = run.data.tags.get("mlflow.runName", "")
    rows = []
    try:
        table = mlflow.artifacts.load_dict(f"runs:/{run_id}/{compare.EXAMPLES_TABLE}")
        rows = compare.rows_from_table(table)
    except Exception:  # a run logged before per-example tables existed: config and metrics only
        pass
    return RunView(label=f"{name} ({run_id[:8]})" if name else run_id, params=dict(run.data.params),
                   metrics=dict(run.data.metrics), rows=rows)


def load(ref: str, tracking_uri: str | None = None) -> RunView:
    path = Path(ref).expanduser()
    if path.exists():
        return from_dir(path)
    m = RUN_ID.match(ref)
    if m:
        return from_mlflow(m.group(2), tracking_uri)
    raise RunnerError(f"{ref!r} is neither a run dir nor an MLflow run id", "pass outputs/runs/<...> or a 32-hex run id")


def _cell(value) -> str:
    text = "—" if value is None else str(value)
    text = text.replace("|", "\\|").replace("\n", " ")
    return f"`{text[:80]}`" if value is not None else text


def _num(v: float | None) -> str:
    return "—" if v is None else f"{v:.4g}"


def config_changes(a: RunView, b: RunView, include_noise: bool = False) -> list[tuple[str, str | None, str | None]]:
    keys = sorted(set(a.params) | set(b.params))
    return [(k, a.params.get(k), b.params.get(k)) for k in keys
            if a.params.get(k) != b.params.get(k) and (include_noise or not NOISE.match(k))]


def metric_rows(a: RunView, b: RunView) -> list[tuple[str, float | None, float | None, float | None]]:
    rows = []
    for k in sorted(set(a.metrics) | set(b.metrics)):
        va, vb = a.metrics.get(k), b.metrics.get(k)
        rows.append((k, va, vb, None if va is None or vb is None else vb - va))
    return rows


def comparisons(a: RunView, b: RunView | None) -> list[compare.Comparison]:
    """Per split, the compiled program of A against that of B; with one run, its baseline against
    its compiled program."""
    a_phase, b_phase, other = ("compiled", "compiled", b) if b is not None else ("baseline", "compiled", a)
    out = []
    for split in ("dev", "test"):
        base = f"{a_phase}" if split == "dev" else f"{a_phase}_test"
        new = f"{b_phase}" if split == "dev" else f"{b_phase}_test"
        if compare.pick(a.rows, base, split) and compare.pick(other.rows, new, split):
            a_label = a.label if b is not None else f"baseline ({a.label})"
            b_label = b.label if b is not None else f"compiled ({a.label})"
            out.append(compare.compare(a.rows, other.rows, a_phase=base, b_phase=new, split=split,
                                       a_label=a_label, b_label=b_label))
    return out


def markdown(a: RunView, b: RunView | None, include_noise: bool = False,
             found: list[compare.Comparison] | None = None) -> str:
    found = comparisons(a, b) if found is None else found
    if b is None:
        out = ["## Run: baseline vs compiled", "", f"- **run**: {a.label}", ""]
    else:
        changes = config_changes(a, b, include_noise)
        out = ["## Run diff", "", f"- **A**: {a.label}", f"- **B**: {b.label}", ""]
        out += [f"### Config ({len(changes)} changed)", ""]
        if changes:
            out += ["| key | A | B |", "|---|---|---|"]
            out += [f"| `{k}` | {_cell(va)} | {_cell(vb)} |" for k, va, vb in changes]
        else:
            out.append("_identical resolved config_")
        out += ["", "### Metrics", ""]
        rows = metric_rows(a, b)
        if rows:
            out += ["| metric | A | B | Δ (B − A) |", "|---|---:|---:|---:|"]
            for k, va, vb, d in rows:
                delta = "—" if d is None else (f"**{d:+.4g}**" if k.endswith("_score") and d else f"{d:+.4g}")
                out.append(f"| `{k}` | {_num(va)} | {_num(vb)} | {delta} |")
        else:
            out.append("_no metrics_")
        out.append("")
    text = "\n".join(out) + "\n"
    for c in found:
        text += "\n" + compare.markdown(c)
    if not found:
        text += "\n_no per-example rows to pair (runs from before examples.jsonl existed)_\n"
    return text


def regression(found: list[compare.Comparison], delta: float) -> compare.Comparison | None:
    """The comparison that fails the gate: the test split if compared, else dev, when B is worse by
    more than `delta` and significantly so."""
    if not found:
        return None
    c = next((c for c in found if c.split == "test"), found[0])
    return c if c.diff < -delta and c.significant() else None


# --------------------------------------------------------------------------- --base REV

def _git(repo: Path, *args: str, stdout=None) -> str:
    """`git ARGS` in `repo`; its output as text, or written to the open binary file `stdout`."""
    import subprocess

    proc = subprocess.run(["git", *args], cwd=repo, stdout=subprocess.PIPE if stdout is None else stdout,
                          stderr=subprocess.PIPE, timeout=60)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise RunnerError(f"git {' '.join(args)} failed: {err.splitlines()[-1] if err else proc.returncode}",
                          "run it inside the repository, with a revision it has (git fetch first)")
    return proc.stdout.decode(errors="replace").strip() if stdout is None else ""


def repo_root(start: Path) -> Path:
    import subprocess

    proc = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=start, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RunnerError(f"{start} is not inside a git repository", "run runner.diff --base from a clone of the project")
    return Path(proc.stdout.strip())


def _presets(conf_dir: Path) -> list[str]:
    return sorted(p.stem for p in (conf_dir / "experiment").glob("*.yaml"))


def composed(conf_dir: Path, overrides: list[str]) -> dict[str, str]:
    """The resolved config for `overrides`, flattened, without paths/hydra keys."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    from runner.redaction import config_scrubber

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]  # its sweep keys need a job number; ${hydra:...} reads HydraConfig
        try:
            tree = OmegaConf.to_container(cfg, resolve=True)
        except Exception:
            tree = OmegaConf.to_container(cfg, resolve=False)
        tree = config_scrubber(cfg).tree(tree)
    return {k: v for k, v in _flatten(tree).items() if not NOISE.match(k)}


def base_markdown(rev: str, where: Path) -> str:
    """Which experiments a change alters: every preset (and the default config) composed at `rev`
    and in the work tree of the repository around `where`."""
    import tarfile
    import tempfile

    root = repo_root(where)
    try:
        commit = _git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except RunnerError:
        raise RunnerError(f"{rev!r} is not a commit in {root}",
                          "pass a branch, tag or sha it has (git fetch origin main, then --base origin/main)") from None
    with tempfile.TemporaryDirectory(prefix="runner-diff-base-") as tmp:
        archive = Path(tmp) / "conf.tar"
        with open(archive, "wb") as fh:
            _git(root, "archive", commit, "conf", stdout=fh)
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        base_conf, head_conf = Path(tmp) / "conf", root / "conf"
        base_names, head_names = set(_presets(base_conf)), set(_presets(head_conf))
        changed, unchanged = [], []
        for name in ["(default config)", *sorted(base_names & head_names)]:
            overrides = [] if name.startswith("(") else [f"experiment={name}"]
            old, new = composed(base_conf, overrides), composed(head_conf, overrides)
            keys = [(k, old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
            (changed if keys else unchanged).append((name, keys))
    out = [f"## Experiments changed since `{rev}` ({commit[:10]})", ""]
    for name, keys in changed:
        out += [f"### {name}: {len(keys)} resolved keys change", "", "| key | before | after |", "|---|---|---|"]
        out += [f"| `{k}` | {_cell(a)} | {_cell(b)} |" for k, a, b in keys] + [""]
    for name in sorted(head_names - base_names):
        out.append(f"- **added** preset `{name}`")
    for name in sorted(base_names - head_names):
        out.append(f"- **removed** preset `{name}`")
    if head_names ^ base_names:
        out.append("")
    out.append(f"{len(unchanged)} of {len(changed) + len(unchanged)} experiments compose to the same resolved config"
               + (f" ({', '.join(n for n, _ in unchanged)})." if unchanged else "."))
    return "\n".join(out) + "\n"


def write(text: str, out: Path) -> list[Path]:
    """The Markdown at `out` and the same as a self-contained page at out.html."""
    page = out.with_suffix(".html")
    out.write_text(text, encoding="utf-8")
    page.write_text(compare.html(text, "dspy-runner diff"), encoding="utf-8")
    return [out, page]


def log_to_mlflow(text: str, tracking_uri: str | None, compared: list[str]) -> str:
    """A run in the reports experiment holding diff.md and diff.html; returns its id."""
    import tempfile

    import mlflow

    from runner.report import EXPERIMENT
    from runner.settings import tracking_config
    from runner.tracking import use_experiment

    use_experiment(tracking_config(tracking_uri), EXPERIMENT)
    with tempfile.TemporaryDirectory(prefix="runner-diff-") as tmp, mlflow.start_run(run_name="diff") as run:
        mlflow.set_tags({f"diff.{i}": ref for i, ref in enumerate(compared)})
        for f in write(text, Path(tmp) / "diff.md"):
            mlflow.log_artifact(str(f))
        return run.info.run_id


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m runner.diff", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[1])
    parser.add_argument("runs", nargs="*", help="one run (baseline vs compiled) or two (A then B)")
    parser.add_argument("--base", metavar="REV", help="compare every experiment preset at git revision REV with the work tree")
    parser.add_argument("--tracking-uri", help="MLflow store for run ids (default: the runner's, conf/tracking/mlflow.yaml)")
    parser.add_argument("--all", action="store_true", help="also show paths/hydra/run-name keys")
    parser.add_argument("--fail-on-regression", type=float, metavar="DELTA",
                        help="exit 1 when B scores more than DELTA below A with p < 0.05 (test split if compared, else dev)")
    parser.add_argument("-o", "--out", help="also write the Markdown to this file, and a self-contained HTML beside it")
    parser.add_argument("--mlflow", action="store_true",
                        help="log the Markdown and HTML as a run of the MLflow experiment dspy-runner-reports")
    args = parser.parse_args(argv)
    failing = None
    try:
        if args.base:
            if args.runs:
                raise RunnerError("--base compares configs, not runs", "pass either --base REV or run dirs / run ids")
            text = base_markdown(args.base, Path.cwd())
        elif len(args.runs) in (1, 2):
            a = load(args.runs[0], args.tracking_uri)
            b = load(args.runs[1], args.tracking_uri) if len(args.runs) == 2 else None
            found = comparisons(a, b)
            text = markdown(a, b, args.all, found)
            if args.fail_on_regression is not None:
                failing = regression(found, args.fail_on_regression)
        else:
            raise RunnerError("nothing to compare", "pass --base REV, one run, or two runs")
    except RunnerError as err:
        exit_with(err)
    sys.stdout.write(text)
    if args.out:
        write(text, Path(args.out))
    if args.mlflow:
        try:
            run_id = log_to_mlflow(text, args.tracking_uri, args.runs or [f"--base {args.base}"])
        except RunnerError as err:
            exit_with(err)
        print(f"logged to MLflow experiment dspy-runner-reports, run {run_id}", file=sys.stderr)
    if failing is not None:
        exit_with(RunnerError(f"regression on the {failing.split} split: {failing.diff:+.3f} "
                              f"(interval {failing.low:+.3f} … {failing.high:+.3f}, p = {failing.p_value:.3f})",
                              f"B is more than {args.fail_on_regression} below A, significantly"))


if __name__ == "__main__":
    main(sys.argv[1:])
