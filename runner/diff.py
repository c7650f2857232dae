"""`python -m runner.diff RUN_A RUN_B`: what changed between two runs, as Markdown for a PR.

A run is a run dir (outputs/runs/... or a multirun job dir) or an MLflow run id (or runs:/ID).
Config comes from the run dir's program/manifest.json (the resolved config) or, failing that,
.hydra/config.yaml; for an MLflow run from its params. Both are flattened to the same dotted
keys (`tracking.flatten`), so a run dir can be compared with an MLflow run. Metrics come from
the manifest's scores or the MLflow run's metrics.

  python -m runner.diff outputs/runs/2026-01-01/10-00-00_gsm8k_none outputs/runs/... > diff.md
  python -m runner.diff 1f2e3d... 9a8b7c... --tracking-uri sqlite:///outputs/mlflow.db
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from runner.errors import RunnerError, exit_with

RUN_ID = re.compile(r"^(runs:/)?([0-9a-f]{32})/?$")
# Keys that differ between any two runs and say nothing about the experiment.
NOISE = re.compile(r"^(paths\.|hydra\.|tracking\.run_name$|run_dir$)")


@dataclass
class RunView:
    label: str
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


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
    return RunView(label=f"{name} ({run_id[:8]})" if name else run_id, params=dict(run.data.params),
                   metrics=dict(run.data.metrics))


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


def markdown(a: RunView, b: RunView, include_noise: bool = False) -> str:
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
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m runner.diff", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_a")
    parser.add_argument("run_b")
    parser.add_argument("--tracking-uri", help="MLflow store for run ids (default: the runner's, conf/tracking/mlflow.yaml)")
    parser.add_argument("--all", action="store_true", help="also show paths/hydra/run-name keys")
    parser.add_argument("-o", "--out", help="also write the Markdown to this file")
    args = parser.parse_args(argv)
    try:
        text = markdown(load(args.run_a, args.tracking_uri), load(args.run_b, args.tracking_uri), args.all)
    except RunnerError as err:
        exit_with(err)
    sys.stdout.write(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
