"""Local backends: llama.cpp (`llamacpp`), mlx-lm (`mlx`), transformers (`torch`). Each module's
`load(model, options)` returns a loaded `Model` (runner.lm.backends.base)."""
