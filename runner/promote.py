"""`python -m runner.promote NAME VERSION|ALIAS [--alias champion]`: move a registry alias.

Programs are registered per task (`registered_model_name: ${task.name}`); a new version gets
the `challenger` alias (tracking.alias). Promoting points `champion` at a version, so every
project that loads `models:/NAME@champion` picks it up without changing its config.

  python -m runner.promote gsm8k challenger          # champion := the current challenger
  python -m runner.promote gsm8k 3 --alias challenger
  python -m runner.promote --list gsm8k               # versions, aliases, scores
"""

from __future__ import annotations

import argparse
import sys

from runner.errors import RunnerError, exit_with
from runner.settings import tracking_uri

def _client(uri: str):
    import mlflow

    from runner.tracking import connect

    connect(uri)
    return mlflow.MlflowClient()


def resolve_version(client, name: str, ref: str) -> str:
    """A version number as given, or the version an alias points at."""
    from mlflow.exceptions import MlflowException

    try:
        if ref.isdigit():
            return client.get_model_version(name, ref).version
        return client.get_model_version_by_alias(name, ref).version
    except MlflowException as exc:
        raise RunnerError(f"model {name!r} has no version or alias {ref!r}: {str(exc).splitlines()[0][:200]}",
                          f"list them with: python -m runner.promote --list {name}") from exc


def promote(name: str, ref: str, alias: str = "champion", uri: str | None = None) -> tuple[str | None, str]:
    """Point `alias` at version `ref` (number or alias); returns (previous version, new version)."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri(uri))
    version = resolve_version(client, name, ref)
    try:
        previous = client.get_model_version_by_alias(name, alias).version
    except MlflowException:
        previous = None
    client.set_registered_model_alias(name, alias, str(version))
    return previous, str(version)


def list_versions(name: str, uri: str | None = None) -> list[dict]:
    """Every version of `name` with its aliases, source run and the run's compiled score."""
    client = _client(tracking_uri(uri))
    try:
        model = client.get_registered_model(name)
    except Exception as exc:
        raise RunnerError(f"no registered model {name!r} at {tracking_uri(uri)}",
                          "register one with: python -m runner task=... register=true") from exc
    aliases: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    rows = []
    for mv in sorted(client.search_model_versions(f"name='{name}'"), key=lambda m: int(m.version)):
        score = None
        if mv.run_id:
            try:
                score = client.get_run(mv.run_id).data.metrics.get("compiled_score")
            except Exception:
                pass
        rows.append({"version": mv.version, "aliases": sorted(aliases.get(str(mv.version), [])),
                     "run_id": mv.run_id, "compiled_score": score})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m runner.promote", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="registered model name (the task name)")
    parser.add_argument("ref", nargs="?", help="version number or alias to promote")
    parser.add_argument("--alias", default="champion", help="alias to move (default: champion)")
    parser.add_argument("--list", action="store_true", help="list versions and aliases instead")
    parser.add_argument("--tracking-uri", help="MLflow store (default: the runner's, conf/tracking/mlflow.yaml)")
    args = parser.parse_args(argv)
    try:
        if args.list or not args.ref:
            for row in list_versions(args.name, args.tracking_uri):
                score = "-" if row["compiled_score"] is None else f"{row['compiled_score']:.3f}"
                print(f"v{row['version']:<4} {','.join(row['aliases']) or '-':<22} score {score:<7} run {row['run_id']}")
            return
        previous, version = promote(args.name, args.ref, args.alias, args.tracking_uri)
        was = f" (was version {previous})" if previous else ""
        print(f"{args.name}@{args.alias} -> version {version}{was}; load it with program=models:/{args.name}@{args.alias}")
    except RunnerError as err:
        exit_with(err)


if __name__ == "__main__":
    main(sys.argv[1:])
