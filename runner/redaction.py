"""Keeping secrets out of everything a run writes.

A secret reaches a run in two ways: through the config (`model.api_key=sk-...` on the command
line, `api_key: ${oc.env:OPENAI_API_KEY}`) or through the environment that LiteLLM and the
hub clients read (`OPENAI_API_KEY`, `HF_TOKEN`). `Scrubber` knows both: values under secret-named
keys of the resolved config and of secret-named environment variables, plus passwords written
into URLs. It masks them by key in config trees and by value in any text, so an override string
(`model.api_key=sk-...`), Hydra's `override_dirname` or a manifest cannot carry one out.

`RedactHydraFiles` is a Hydra callback (conf/hydra/default.yaml): Hydra saves `.hydra/config.yaml`,
`hydra.yaml` and `overrides.yaml` (and a sweep's `multirun.yaml`) with the values as typed, just
before the job starts; the callback rewrites them masked before the job runs, so neither the run
dir nor the copy uploaded to MLflow holds a secret.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode

# `token` only as a whole word or suffix (hf_token, auth_token): not max_tokens / n_tokens.
SECRET_NAME = re.compile(r"(api_?key|secret|password|passwd|credential|authorization|(^|[_.-])token$)", re.I)
MASK = "<redacted>"  # a plain YAML scalar ("***" would read as an alias in the rewritten .hydra files)
MIN_SECRET_LEN = 8  # shorter values ("1", "true") would mask ordinary text everywhere
URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)([^/\s@]+)@", re.I)


def is_secret_name(name: Any) -> bool:
    return bool(SECRET_NAME.search(str(name)))


def _secret_values(tree: Any, under_secret: bool = False) -> Iterable[str]:
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            yield from _secret_values(value, under_secret or is_secret_name(key))
    elif isinstance(tree, (list, tuple)):
        for value in tree:
            yield from _secret_values(value, under_secret)
    elif under_secret and isinstance(tree, str):
        yield tree


class Scrubber:
    """Masks known secret values in text and secret-named keys in trees."""

    def __init__(self, values: Iterable[str] = ()):
        found = {str(v) for v in values if v is not None and len(str(v)) >= MIN_SECRET_LEN}
        self.values = sorted(found, key=len, reverse=True)  # longest first: a key containing another

    @classmethod
    def collect(cls, tree: Any = None, environ: Mapping[str, str] | None = None) -> Scrubber:
        """Secrets of a resolved config tree plus those of the environment."""
        environ = os.environ if environ is None else environ
        env = [value for name, value in environ.items() if is_secret_name(name)]
        return cls([*_secret_values(tree), *env])

    def text(self, text: str) -> str:
        for value in self.values:
            text = text.replace(value, MASK)
        return URL_PASSWORD.sub(rf"\1{MASK}@", text)

    def tree(self, tree: Any) -> Any:
        """A copy with values under secret-named keys masked and secrets removed from every string."""
        if isinstance(tree, Mapping):
            return {k: (MASK if is_secret_name(k) and v not in (None, "") and not isinstance(v, (Mapping, list))
                        else self.tree(v)) for k, v in tree.items()}
        if isinstance(tree, (list, tuple)):
            return [self.tree(v) for v in tree]
        if isinstance(tree, str):
            return self.text(tree)
        return tree


def config_scrubber(cfg) -> Scrubber:
    """A Scrubber for an OmegaConf config: its resolved secret values plus the environment's.

    A config that does not resolve here (an interpolation that only a running job can answer)
    contributes the secrets written in it literally."""
    from omegaconf import OmegaConf

    try:
        tree = OmegaConf.to_container(cfg, resolve=True)
    except Exception:
        tree = OmegaConf.to_container(cfg, resolve=False)
    return Scrubber.collect(tree)


def scrub_file(path: Path, scrubber: Scrubber) -> None:
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        masked = scrubber.text(text)
        if masked != text:
            path.write_text(masked, encoding="utf-8")


class RedactHydraFiles(Callback):
    """Rewrite the config files Hydra saved for a job (and a sweep) with secrets masked."""

    def on_job_start(self, config, **kwargs) -> None:
        from omegaconf import OmegaConf

        scrubber = config_scrubber(config)
        subdir = OmegaConf.select(config, "hydra.output_subdir")
        if subdir is not None:
            folder = Path(config.hydra.runtime.output_dir) / str(subdir)
            for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
                scrub_file(folder / name, scrubber)
        if OmegaConf.select(config, "hydra.mode") == RunMode.MULTIRUN:
            scrub_file(Path(str(OmegaConf.select(config, "hydra.sweep.dir"))) / "multirun.yaml", scrubber)


def span_scrubber(scrubber: Scrubber):
    """An MLflow span processor (`mlflow.tracing.configure(span_processors=[...])`) that masks
    secrets in a span's inputs, outputs and attributes before it is exported: MLflow's DSPy tracer
    drops `api_key` from an LM's attributes, not e.g. an `Authorization` header in its kwargs."""

    def process(span) -> None:
        inputs, outputs = span.inputs, span.outputs
        if inputs is not None:
            clean = scrubber.tree(inputs)
            if clean != inputs:
                span.set_inputs(clean)
        if outputs is not None:
            clean = scrubber.tree(outputs)
            if clean != outputs:
                span.set_outputs(clean)
        for key, value in dict(span.attributes or {}).items():
            clean = MASK if is_secret_name(key) and value not in (None, "") else scrubber.tree(value)
            if clean != value:
                span.set_attribute(key, clean)

    return process
