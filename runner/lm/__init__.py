"""LM backends: building the `dspy.LM` of a run and running local models in process.

`build` (build_lm / auto_lm: Hydra `_target_`s of conf/model/), `embedded` (the bundled GGUF),
`hardware` (what `model=auto` looks at), `bandwidth` (the read-bandwidth probe of the benchmark),
`gguf_to_mlx` (GGUF -> mlx-lm folder) and the local backends themselves.
"""
