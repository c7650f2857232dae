"""LoRA fine-tuning hyperparameters for a base model, sequence length and GPU memory budget.

The metric scores a proposal with an explicit GPU-memory model and published recipes:

* Frozen weights, bytes per parameter by storage precision: 2 (16-bit), 1 (8-bit, LLM.int8,
  Dettmers et al. 2022), 0.5 + 0.127/8 (4-bit NF4 with double quantization: QLoRA, Dettmers et al.
  2023, Sec. 3 reports 0.127 bits/param of quantization constants). Embeddings and the LM head
  are not quantized by bitsandbytes, so they stay at 2 bytes.
* LoRA parameters (Hu et al. 2021): r * (d_in + d_out) per adapted matrix. Adapters go on every
  linear layer of every block (q, k, v, o and the MLP), as QLoRA Sec. 4 finds necessary to match
  full fine-tuning quality.
* Trainable-parameter state: 16 bytes/param, i.e. fp32 adapter weights (4) + gradients (4) + AdamW's
  two fp32 moments (8) (the mixed-precision Adam accounting of ZeRO, Rajbhandari et al. 2020).
* Activations with gradient checkpointing (QLoRA trains with it): each layer keeps its 16-bit
  input, 2*s*b*h bytes, and one layer at a time is recomputed with the full
  s*b*h*(34 + 5*a*s/h) bytes of Korthikanti et al. 2022 ("Reducing Activation Recomputation in
  Large Transformer Models", Eq. 1, no flash attention; a = h/128 heads). The fp32 logits add
  4*s*b*V bytes.
* 1 GiB for the CUDA context and allocator slack.

Quality terms come from the same papers: learning rate 2e-4 for models up to 13B and 1e-4 for
33B/65B (QLoRA, Appendix B hyperparameters; LoRA used 2e-4 for GPT-2); rank anywhere from 4 to
64 performs alike (LoRA, Table 6; QLoRA Fig. 4 finds rank does not matter once all layers are
adapted); micro-batch up to 16 (QLoRA's batch size for 7B/13B), since a smaller one only adds
gradient-accumulation steps.
"""

from __future__ import annotations

import math
from typing import Literal

import dspy

from runner.errors import RunnerError
from signatures._common import choice, field, integer, number, result, seeded_splits

GIB = 2 ** 30
PRECISIONS = ("16bit", "8bit", "4bit")          # least to most aggressive
BYTES_PER_PARAM = {"16bit": 2.0, "8bit": 1.0, "4bit": 0.5 + 0.127 / 8}
TRAINABLE_BYTES = 16          # fp32 weight + fp32 grad + AdamW m and v
OVERHEAD_GIB = 1.0
REF_RANK = 16
MAX_BATCH = 16

# Published architecture configs (model cards / config.json): total params, hidden size, layers,
# MLP size, key/value width (grouped-query attention), vocabulary, gated (SwiGLU, 3 MLP matrices),
# tied input/output embeddings.
MODELS = {
    "GPT-2-124M": dict(params=124e6, hidden=768, layers=12, ffn=3072, kv=768, vocab=50257, gated=False, tied=True),
    "Qwen2.5-1.5B": dict(params=1.54e9, hidden=1536, layers=28, ffn=8960, kv=256, vocab=151936, gated=True, tied=True),
    "Phi-2": dict(params=2.78e9, hidden=2560, layers=32, ffn=10240, kv=2560, vocab=51200, gated=False, tied=False),
    "Llama-2-7B": dict(params=6.74e9, hidden=4096, layers=32, ffn=11008, kv=4096, vocab=32000, gated=True, tied=False),
    "Mistral-7B": dict(params=7.24e9, hidden=4096, layers=32, ffn=14336, kv=1024, vocab=32000, gated=True, tied=False),
    "Llama-3-8B": dict(params=8.03e9, hidden=4096, layers=32, ffn=14336, kv=1024, vocab=128256, gated=True, tied=False),
    "Llama-2-13B": dict(params=13.0e9, hidden=5120, layers=40, ffn=13824, kv=5120, vocab=32000, gated=True, tied=False),
    "Llama-2-70B": dict(params=69.0e9, hidden=8192, layers=80, ffn=28672, kv=1024, vocab=32000, gated=True, tied=False),
}
SEQ_LENS = (256, 512, 1024, 2048)
GPU_GIB = (8, 12, 16, 24, 40, 48, 80)
PRECISION_ALIASES = {"bf16": "16bit", "fp16": "16bit", "16": "16bit", "none": "16bit", "full": "16bit",
                     "int8": "8bit", "8": "8bit", "llm_int8": "8bit",
                     "nf4": "4bit", "int4": "4bit", "4": "4bit", "qlora": "4bit", "fp4": "4bit"}


class ChooseLoraConfig(dspy.Signature):
    """Choose LoRA fine-tuning settings that fit the GPU memory and follow the QLoRA recipe."""

    base_model: str = dspy.InputField(desc="the base model to fine-tune")
    seq_len: int = dspy.InputField(desc="training sequence length in tokens")
    gpu_memory_gb: int = dspy.InputField(desc="GPU memory available, in GB")
    quantization: Literal["16bit", "8bit", "4bit"] = dspy.OutputField(
        desc="storage precision of the frozen base weights; 4bit (QLoRA) only when 16bit does not fit")
    rank: int = dspy.OutputField(desc="LoRA rank r, e.g. 16")
    batch_size: int = dspy.OutputField(desc="micro-batch size per step, at most 16, that still fits in memory")
    learning_rate: float = dspy.OutputField(desc="AdamW learning rate, e.g. 2e-4")


def model_spec(name: str) -> dict:
    """The architecture of a catalogued base model (a RunnerError names the known ones)."""
    if name not in MODELS:
        raise RunnerError(f"unknown base model {name!r} for the lora task", f"use one of {sorted(MODELS)}")
    return MODELS[name]


def lora_params(spec: dict, rank: int) -> float:
    """LoRA parameter count: r * (d_in + d_out) for q, k, v, o and every MLP matrix of every layer."""
    h, kv, f = spec["hidden"], spec["kv"], spec["ffn"]
    attention = (h + h) + (h + kv) + (h + kv) + (h + h)
    mlp = (3 if spec["gated"] else 2) * (h + f)
    return rank * (attention + mlp) * spec["layers"]


def memory_gib(base_model: str, seq_len: int, precision: str, rank: int, batch: int) -> dict:
    """Training-memory breakdown in GiB (see the module docstring for every term's source)."""
    spec = model_spec(base_model)
    h, layers, vocab = spec["hidden"], spec["layers"], spec["vocab"]
    embed = vocab * h * (1 if spec["tied"] else 2)
    weights = (spec["params"] - embed) * BYTES_PER_PARAM[precision] + embed * 2.0
    adapters = lora_params(spec, rank) * TRAINABLE_BYTES
    heads = max(1, h // 128)
    sbh = seq_len * batch * h
    activations = layers * 2 * sbh + sbh * (34 + 5 * heads * seq_len / h) + 4 * seq_len * batch * vocab
    parts = {"weights": weights / GIB, "adapters+optimizer": adapters / GIB,
             "activations": activations / GIB, "overhead": OVERHEAD_GIB}
    parts["total"] = sum(parts.values())
    return parts


def reference_lr(base_model: str) -> float:
    """QLoRA's learning rates: 2e-4 up to 13B parameters, 1e-4 for the 33B/65B models."""
    return 2e-4 if model_spec(base_model)["params"] < 20e9 else 1e-4


def fits(base_model: str, seq_len: int, gpu_gb: float, precision: str, rank: int, batch: int) -> bool:
    return memory_gib(base_model, seq_len, precision, rank, batch)["total"] <= gpu_gb


def reference(base_model: str, seq_len: int, gpu_memory_gb: int) -> dict | None:
    """The reference answer: the least aggressive precision that fits at batch 1 (quantization only
    when needed: NF4 matches 16-bit quality, QLoRA Table 4, but dequantizing costs speed), then
    the largest power-of-two batch up to 16 that fits, rank 16 and QLoRA's learning rate.
    None when nothing fits (such scenarios are never generated)."""
    for precision in PRECISIONS:
        if fits(base_model, seq_len, gpu_memory_gb, precision, REF_RANK, 1):
            batch = max(b for b in (1, 2, 4, 8, 16)
                        if fits(base_model, seq_len, gpu_memory_gb, precision, REF_RANK, b))
            return {"quantization": precision, "rank": REF_RANK, "batch_size": batch,
                    "learning_rate": reference_lr(base_model)}
    return None


def make_scenario(rng) -> dict:
    """A random (model, seq_len, GPU) that is feasible at 4-bit, rank 16, batch 1."""
    while True:
        s = {"base_model": rng.choice(sorted(MODELS)), "seq_len": rng.choice(SEQ_LENS),
             "gpu_memory_gb": rng.choice(GPU_GIB)}
        if reference(**s) is not None:
            return s


def to_example(scenario: dict):
    return dspy.Example(**scenario, **reference(**scenario)).with_inputs("base_model", "seq_len", "gpu_memory_gb")


def load_splits(seed: int = 0, n_train: int = 24, n_dev: int = 16, n_test: int = 32) -> dict[str, list]:
    """Seeded scenarios labelled with the reference configuration."""
    return seeded_splits(seed, {"train": n_train, "dev": n_dev, "test": n_test}, make_scenario, to_example, "lora")


def _lr_score(lr: float, ref: float) -> float:
    """Gaussian in log10 space, 0.6 decades wide: x2 off -> 0.88, x3 -> 0.72, x10 -> 0.25."""
    return math.exp(-0.5 * (math.log10(lr / ref) / 0.6) ** 2)


def _rank_score(rank: int) -> float:
    """Ranks 4..64 perform alike (LoRA Table 6); 1-3 lose a little; above 64 only adds memory."""
    if 4 <= rank <= 64:
        return 1.0
    if rank < 4:
        return 0.8
    return max(0.3, math.sqrt(64 / rank))


def metric(example, pred, trace=None, pred_name=None, pred_trace=None):
    """Memory feasibility under the budget, then closeness to the recipe, as one graded score.

    Each of precision, rank, batch and learning rate scores in [0, 1]; the score is their mean.
    A configuration that does not fit the GPU keeps at most 30% of that, scaled by budget/need.
    """
    model, seq, gpu = example.base_model, int(example.seq_len), float(example.gpu_memory_gb)
    ref = {k: example[k] for k in ("quantization", "rank", "batch_size", "learning_rate")}
    prec = choice(field(pred, "quantization"), PRECISIONS, PRECISION_ALIASES)
    rank, batch = integer(field(pred, "rank")), integer(field(pred, "batch_size"))
    lr = number(field(pred, "learning_rate"))
    problems = []
    if prec is None:
        problems.append(f"quantization {field(pred, 'quantization')!r} is not one of {list(PRECISIONS)}")
    if rank is None or rank < 1:
        problems.append(f"rank {field(pred, 'rank')!r} is not a positive integer")
    if batch is None or batch < 1:
        problems.append(f"batch_size {field(pred, 'batch_size')!r} is not a positive integer")
    if lr is None or lr <= 0:
        problems.append(f"learning_rate {field(pred, 'learning_rate')!r} is not a positive number")
    if problems:
        return result(0.0, "Unusable answer: " + "; ".join(problems) +
                      f". A good answer here: {ref['quantization']}, rank {ref['rank']}, "
                      f"batch {ref['batch_size']}, lr {ref['learning_rate']:g}.")

    notes = []
    step = PRECISIONS.index(prec) - PRECISIONS.index(ref["quantization"])
    s_prec = 1.0 if step <= 0 else 1.0 - 0.2 * step
    if step > 0:
        notes.append(f"{prec} is more quantization than needed: {ref['quantization']} weights fit in "
                     f"{gpu:g} GB and avoid the dequantization slowdown")
    s_rank = _rank_score(rank)
    if s_rank < 1:
        notes.append(f"rank {rank} is outside 4-64, where LoRA quality is flat; use e.g. {REF_RANK}")
    s_batch = 1.0 if batch >= ref["batch_size"] else math.log2(1 + batch) / math.log2(1 + ref["batch_size"])
    if s_batch < 1:
        notes.append(f"batch {batch} underuses the GPU: batch {ref['batch_size']} fits")
    ref_lr = reference_lr(model)
    s_lr = _lr_score(lr, ref_lr)
    if s_lr < 0.95:
        notes.append(f"learning rate {lr:g} is far from QLoRA's {ref_lr:g} for this model size")
    quality = (s_prec + s_rank + s_batch + s_lr) / 4

    mem = memory_gib(model, seq, prec, rank, batch)
    breakdown = ", ".join(f"{k} {v:.1f}" for k, v in mem.items() if k != "total")
    if mem["total"] > gpu:
        score = 0.3 * quality * gpu / mem["total"]
        return result(score, f"Out of memory: {prec} weights, rank {rank}, batch {batch} at seq {seq} need "
                             f"{mem['total']:.1f} GB > {gpu:g} GB budget ({breakdown} GB). "
                             + (" ".join(n + "." for n in notes) + " " if notes else "")
                             + f"A fitting choice: {ref['quantization']}, rank {ref['rank']}, batch {ref['batch_size']}, "
                               f"lr {ref['learning_rate']:g}.")
    if not notes:
        return result(quality, f"Good: fits in {mem['total']:.1f} of {gpu:g} GB ({breakdown} GB) and follows the recipe.")
    return result(quality, f"Fits in {mem['total']:.1f} of {gpu:g} GB, but: " + "; ".join(notes) + ".")
