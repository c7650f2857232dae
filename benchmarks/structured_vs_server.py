"""Benchmark: stock DSPy against llama.cpp's OpenAI server vs the runner's structured generation.

    python benchmarks/structured_vs_server.py [--tasks lora,sentiment] [--split dev]

The same zero-shot program (`dspy.Predict` over the task's signature) on the same rows of each
task, with the same GGUF (the embedded SmolLM2-135M), greedy, DSPy's cache off, one call at a
time:

  (a) stock DSPy: `dspy.ChatAdapter` (with its JSONAdapter retry on a parse failure) and a
      `dspy.LM("openai/...")` pointed at `python -m llama_cpp.server`, which this script starts on
      127.0.0.1 with the model's own chat template, and stops before (b) runs. The LM uses DSPy's
      LiteLLM engine (`engine="litellm"`): DSPy 3.4's native engine sends OpenAI's
      `max_completion_tokens`, which llama-cpp-python's server ignores (784 tokens generated for a
      limit of 5), so without it side (a) would run unbounded and the comparison would be unfair;
  (b) the runner: the in-process llama.cpp engine with `adapter=structured` (the signature's JSON
      schema enforced by llama.cpp's grammar engine).

Prints, per task and side: score (the task metric's mean), parse failures, LM calls, completion
tokens and wall time, then the (a)/(b) wall-time ratio and the score difference, and for (b) the
completion tokens of each call over the tokens of the typed answer it returned (its output
fields as compact JSON). Nothing else
may run a model on this machine meanwhile: llama.cpp's busy-waiting threads make concurrent
timings meaningless.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TASKS = {  # task -> (signature class, dev rows the runner's task config uses)
    "lora": ("ChooseLoraConfig", 16),
    "clip": ("AdaptClipToDomain", 16),
    "diffusion": ("ChooseDiffusionSampler", 16),
    "federated": ("ChooseFederatedConfig", 16),
    "sentiment": ("ClassifySentiment", 32),
}
MAX_TOKENS = 256


def rows(task: str, split: str):
    module = importlib.import_module(f"signatures.{task}")
    sig_name, n_dev = TASKS[task]
    splits = module.load_splits(seed=0, n_train=24 if task != "sentiment" else 32, n_dev=n_dev, n_test=32)
    return getattr(module, sig_name), module.metric, splits[split]


def run_side(lm, adapter, signature, metric, examples, answer_tokens=None) -> dict:
    """The program over `examples`, sequentially; parse failures score 0 and are counted.
    `answer_tokens(text)`: the model's token count of a text, to relate each call's completion
    tokens to the length of the typed answer it returned (the output fields as compact JSON)."""
    import dspy

    program = dspy.Predict(signature)
    start_calls = len(lm.history)
    scores, failures, ratios = [], 0, []
    t0 = time.perf_counter()
    with dspy.context(lm=lm, adapter=adapter):
        for example in examples:
            calls_before = len(lm.history)
            try:
                pred = program(**example.inputs())
                scores.append(float(metric(example, pred).score))
            except Exception as exc:  # AdapterParseError: no parseable fields in the reply
                if "parse" not in type(exc).__name__.lower() and "parse" not in str(exc).lower():
                    raise
                failures += 1
                scores.append(0.0)
                continue
            if answer_tokens is not None:
                typed = json.dumps({k: pred[k] for k in signature.output_fields}, separators=(",", ":"))
                spent = sum(int((c.get("usage") or {}).get("completion_tokens") or 0) for c in lm.history[calls_before:])
                ratios.append(spent / answer_tokens(typed))
    wall = time.perf_counter() - t0
    calls = lm.history[start_calls:]
    return {"score": sum(scores) / len(scores), "failures": failures, "calls": len(calls),
            "completion": sum(int((c.get("usage") or {}).get("completion_tokens") or 0) for c in calls),
            "wall": wall, "ratios": ratios}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(gguf: Path, port: int, threads: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", "smollm2",
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--n_threads", str(threads),
           "--n_threads_batch", str(threads), "--verbose", "false"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("llama_cpp.server did not start within 120 s")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="lora,sentiment")
    parser.add_argument("--split", default="dev")
    args = parser.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]

    import dspy
    from rich.console import Console
    from rich.table import Table

    from runner.dspy_ext.adapters import StructuredAdapter
    from runner.lm.backends.llamacpp import default_threads
    from runner.lm.build import build_lm
    from runner.lm.embedded import embedded_gguf_path
    from runner.logs import quiet_libraries

    quiet_libraries()
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    threads = default_threads()
    results: dict[tuple[str, str], dict] = {}

    # (a) stock DSPy + ChatAdapter against llama.cpp's OpenAI server
    port = free_port()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"llama-server-{port}.log"
    server = start_server(embedded_gguf_path(), port, threads, log)
    try:
        lm = dspy.LM("openai/smollm2", api_base=f"http://127.0.0.1:{port}/v1", api_key="not-needed",
                     temperature=0.0, max_tokens=MAX_TOKENS, cache=False, num_retries=0, engine="litellm")
        for task in tasks:
            signature, metric, examples = rows(task, args.split)
            run_side(lm, dspy.ChatAdapter(), signature, metric, examples[:1])  # warm the server's prompt cache path
            results[(task, "a")] = run_side(lm, dspy.ChatAdapter(), signature, metric, examples)
    finally:
        server.terminate()
        server.wait(timeout=30)

    # (b) the runner: in-process llama.cpp engine, adapter=structured
    lm = build_lm("llamacpp/embedded", temperature=0.0, max_tokens=MAX_TOKENS, cache=False)
    llm = lm.engine.model.llm

    def answer_tokens(text: str) -> int:
        return len(llm.tokenize(text.encode("utf-8"), add_bos=False))

    for task in tasks:
        signature, metric, examples = rows(task, args.split)
        run_side(lm, StructuredAdapter(), signature, metric, examples[:1])  # the same warm-up
        results[(task, "b")] = run_side(lm, StructuredAdapter(), signature, metric, examples, answer_tokens)

    console = Console(width=110)
    table = Table(title=f"zero-shot dspy.Predict on the {args.split} split, SmolLM2-135M Q4_1, {threads} threads",
                  caption="(a) stock DSPy, ChatAdapter, llama_cpp.server over HTTP; (b) runner, adapter=structured, "
                          "llama.cpp in process")
    for col, just in (("task", "left"), ("side", "left"), ("score", "right"), ("parse failures", "right"),
                      ("LM calls", "right"), ("completion tok", "right"), ("wall s", "right")):
        table.add_column(col, justify=just)
    names = {"a": "(a) stock", "b": "(b) runner"}
    for task in tasks:
        for side in ("a", "b"):
            r = results[(task, side)]
            table.add_row(task, names[side], f"{r['score']:.3f}", str(r["failures"]), str(r["calls"]),
                          str(r["completion"]), f"{r['wall']:.1f}")
    console.print(table)
    for task in tasks:
        a, b = results[(task, "a")], results[(task, "b")]
        console.print(f"{task}: (b) is {a['wall'] / b['wall']:.1f}x faster than (a); score {b['score']:.3f} vs "
                      f"{a['score']:.3f} ({b['score'] - a['score']:+.3f}); completion tokens "
                      f"{a['completion'] / max(1, b['completion']):.1f}x fewer")
        if b["ratios"]:
            console.print(f"{task}: (b) completion tokens per call / tokens of the typed answer as compact JSON: "
                          f"mean {sum(b['ratios']) / len(b['ratios']):.2f}, max {max(b['ratios']):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
