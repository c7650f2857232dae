"""dspy-runner: a declarative, Hydra-configured experiment runner for DSPy programs."""

import os

# LiteLLM fetches a model price map from the network at import; offline that costs
# several seconds of retries. The bundled copy is enough.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

__version__ = "0.1.0"

import importlib  # noqa: E402
import importlib.abc  # noqa: E402
import importlib.util  # noqa: E402
import sys  # noqa: E402

# Modules that moved when runner/ was laid out by concern (job/, programs/, dspy_ext/). Saved
# manifests name `_target_` paths and logged MLflow models pickle classes by module path, so the
# old names keep importing: each is an alias of the module that replaced it.
MOVED_MODULES = {
    "runner.app": "runner.run",
    "runner.pipeline": "runner.job.pipeline",
    "runner.evaluation": "runner.job.evaluation",
    "runner.usage": "runner.job.usage",
    "runner.progress": "runner.job.progress",
    "runner.summary": "runner.job.summary",
    "runner.datasets": "runner.job.datasets",
    "runner.tasks": "runner.programs.signature",
    "runner.manifest": "runner.programs.manifest",
    "runner.loading": "runner.programs.loading",
    "runner.adapters": "runner.dspy_ext.adapters.lenient",
    "runner.plain_adapter": "runner.dspy_ext.adapters.plain",
    "runner.stream_listener": "runner.dspy_ext.streaming",
    "runner.metrics": "runner.dspy_ext.metrics",
    "runner.optimizers": "runner.dspy_ext.optimizers",
    "runner.embeddings": "runner.dspy_ext.embeddings",
}


class _MovedModuleAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """`import runner.adapters` gives the module runner.dspy_ext.adapters.lenient itself."""

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in MOVED_MODULES else None

    def create_module(self, spec):
        module = importlib.import_module(MOVED_MODULES[spec.name])
        spec.loader_state = module.__spec__  # the import machinery sets the alias's spec on the module
        return module

    def exec_module(self, module):
        module.__spec__ = module.__spec__.loader_state


if not any(isinstance(f, _MovedModuleAlias) for f in sys.meta_path):
    sys.meta_path.insert(0, _MovedModuleAlias())
