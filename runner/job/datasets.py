"""Loading a user's JSONL/CSV file into train/dev/test splits (the `custom` task)."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from runner.errors import RunnerError
from runner.programs.signature import resolve_signature, to_examples, validate_rows

SPLITS = ("train", "dev", "test")


def read_rows(path: str | Path) -> list[dict]:
    """Rows of a .jsonl / .json (list) / .csv file; a broken line is reported by number."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise RunnerError(f"dataset file not found: {p}", "set task.data to an existing .jsonl or .csv file")
    suffix = p.suffix.lower()
    if suffix == ".csv":
        with p.open(newline="", encoding="utf-8") as f:
            return [dict(r) for r in csv.DictReader(f)]
    if suffix == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise RunnerError(f"{p}: invalid JSON: {exc}", "fix the file or use JSONL (one object per line)") from exc
        if not isinstance(data, list):
            raise RunnerError(f"{p}: expected a JSON list of rows", "use a list of objects or JSONL")
        return data
    if suffix in (".jsonl", ".ndjson"):
        rows = []
        with p.open(encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise RunnerError(f"{p}: line {n} is not valid JSON: {exc.msg}", "fix or remove that line") from exc
        return rows
    raise RunnerError(f"unsupported dataset format {suffix!r} for {p}", "use .jsonl, .json or .csv")


def split_rows(rows: list[dict], fractions, seed: int) -> dict[str, list[dict]]:
    """Use an explicit `split` column when present, else a seeded shuffle cut by `fractions`."""
    if rows and all("split" in r for r in rows):
        out = {s: [] for s in SPLITS}
        for r in rows:
            s = {"validation": "dev", "val": "dev"}.get(r["split"], r["split"])
            if s not in out:
                raise RunnerError(f"unknown split {r['split']!r}", f"use one of {SPLITS}")
            out[s].append({k: v for k, v in r.items() if k != "split"})
        return out
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-6:
        raise RunnerError(f"task.splits.fractions={list(fractions)} must be three numbers summing to 1", "e.g. [0.5,0.25,0.25]")
    shuffled = rows[:]
    random.Random(seed).shuffle(shuffled)
    n = len(shuffled)
    a = round(n * fractions[0])
    b = a + round(n * fractions[1])
    return {"train": shuffled[:a], "dev": shuffled[a:b], "test": shuffled[b:]}


def load_file_splits(path: str, signature, seed: int = 0, fractions=(0.5, 0.25, 0.25)) -> dict[str, list]:
    """Read, validate against the signature, and split a dataset file into dspy.Examples."""
    sig = resolve_signature(signature)
    rows = read_rows(path)
    if len(rows) < 3:
        raise RunnerError(f"{path}: {len(rows)} rows is too few for train/dev/test", "provide at least 3 rows")
    validate_rows(rows, sig, str(path))
    return {name: to_examples(part, sig) for name, part in split_rows(rows, list(fractions), seed).items()}
