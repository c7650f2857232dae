"""`python -m runner`: rewrite `program=<saved program>` before Hydra parses the command line.

Hydra reads `program=X` as the config-group option X, so `program=models:/gsm8k@champion` or
`program=outputs/runs/.../program` would be an unknown option. Such values (an MLflow URI or a
path) become `program=load program.uri=<value>` (conf/program/load.yaml). Plain option names
pass through untouched, so Hydra still reports a real unknown option. Only string work here:
`--help` stays fast.
"""

import re
import sys

_REF = re.compile(r"^(models|runs):/")


def _is_ref(value: str) -> bool:
    return bool(_REF.match(value)) or value.endswith(".json") or "/" in value


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def rewrite_argv(args: list[str]) -> list[str]:
    """['program=models:/a@b'] -> ['program=load', "program.uri='models:/a@b'"]; a comma list
    of refs (a multirun sweep) becomes a sweep over program.uri. Inline signatures
    (task.signature=a -> b) get quoted."""
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+~") == "program" and value:
            parts = value.split(",")
            if all(_is_ref(p) for p in parts):
                out += ["program=load", "program.uri=" + ",".join(_quote(p) for p in parts)]
                continue
        if sep and "->" in value and value[0] not in "'\"":
            # an inline signature ("question -> answer") is not valid Hydra override syntax
            # unquoted, and the shell has already eaten the user's quotes
            out.append(f"{key}={_quote(value)}")
            continue
        out.append(arg)
    return out


def main() -> None:
    """`python -m runner` and the `dspy-runner` console script."""
    sys.argv[1:] = rewrite_argv(sys.argv[1:])
    from runner.run import main as run

    run()


if __name__ == "__main__":
    main()
