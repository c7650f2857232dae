"""dspy-runner: a declarative, Hydra-configured experiment runner for DSPy programs."""

import os

# LiteLLM fetches a model price map from the network at import; offline that costs
# several seconds of retries. The bundled copy is enough.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

__version__ = "0.1.0"
