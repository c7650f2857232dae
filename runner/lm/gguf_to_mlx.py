"""Convert a llama-architecture GGUF into an mlx-lm model folder, offline, once.

mlx can read GGUF itself (`mx.load(..., return_metadata=True)`) and keeps Q4_0/Q4_1/Q8_0
tensors quantized (group size 32, `.scales`/`.biases`), which is exactly mlx-lm's affine
quantization. What is missing for `mlx_lm.load` is the HF layout: tensor names, config.json
and a tokenizer. llama.cpp stores q/k rows permuted for interleaved RoPE; instead of undoing
that on quantized rows we set `rope_traditional: true`, which is the same rotation.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from runner.errors import RunnerError

_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def hf_name(gguf_name: str) -> str:
    """`blk.3.attn_q.scales` -> `model.layers.3.self_attn.q_proj.scales`."""
    base, _, suffix = gguf_name.rpartition(".")
    match = re.fullmatch(r"blk\.(\d+)\.(\w+)", base)
    if match and match.group(2) in _LAYER_NAMES:
        return f"model.layers.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}.{suffix}"
    if base in _TOP_NAMES:
        return f"{_TOP_NAMES[base]}.{suffix}"
    raise RunnerError(f"unsupported GGUF tensor {gguf_name!r}", "only llama-architecture GGUF files convert to MLX")


def _meta(metadata: dict, key: str, default=None):
    value = metadata.get(key, default)
    return value.item() if hasattr(value, "item") else value


def build_config(metadata: dict, weights: dict) -> dict:
    """mlx-lm llama config.json from GGUF metadata; per-tensor bits inferred from packed shapes."""
    if _meta(metadata, "general.architecture") != "llama":
        raise RunnerError(f"GGUF architecture {_meta(metadata, 'general.architecture')!r} is not supported",
                          "only llama-architecture GGUF files convert to MLX; use the llamacpp backend")
    heads = int(_meta(metadata, "llama.attention.head_count"))
    hidden = int(_meta(metadata, "llama.embedding_length"))
    config = {
        "model_type": "llama",
        "hidden_size": hidden,
        "num_hidden_layers": int(_meta(metadata, "llama.block_count")),
        "intermediate_size": int(_meta(metadata, "llama.feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(_meta(metadata, "llama.attention.head_count_kv", heads)),
        "head_dim": int(_meta(metadata, "llama.rope.dimension_count", hidden // heads)),
        "rms_norm_eps": float(_meta(metadata, "llama.attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(_meta(metadata, "llama.rope.freq_base", 10000.0)),
        "rope_traditional": True,  # GGUF q/k rows are permuted for interleaved RoPE
        "max_position_embeddings": int(_meta(metadata, "llama.context_length", 2048)),
        "vocab_size": int(weights["model.embed_tokens.weight"].shape[0]),
        "tie_word_embeddings": "lm_head.weight" not in weights,
        "bos_token_id": _meta(metadata, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": _meta(metadata, "tokenizer.ggml.eos_token_id"),
    }
    bits_of = {}
    for name, scales in weights.items():
        if name.endswith(".scales"):
            module = name[: -len(".scales")]
            packed = weights[f"{module}.weight"]
            group_size = 32  # what mlx uses for GGUF Q4_0/Q4_1/Q8_0
            bits_of[module] = packed.shape[-1] * 32 // (scales.shape[-1] * group_size)
    if bits_of:
        common = max(set(bits_of.values()), key=list(bits_of.values()).count)
        quant = {"group_size": 32, "bits": common}
        quant.update({m: {"group_size": 32, "bits": b} for m, b in bits_of.items() if b != common})
        config["quantization"] = quant
    return config


def build_tokenizer(metadata: dict, out: Path) -> None:
    """tokenizer.json + tokenizer_config.json from the GGUF vocabulary (GPT-2 byte-level BPE)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    if _meta(metadata, "tokenizer.ggml.model") != "gpt2":
        raise RunnerError("only GPT-2 style (byte-level BPE) GGUF tokenizers convert to MLX",
                          "use the llamacpp backend for this model")
    tokens = list(metadata["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in metadata["tokenizer.ggml.merges"]]
    types = metadata.get("tokenizer.ggml.token_type")
    types = types.tolist() if hasattr(types, "tolist") else list(types or [])
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if _meta(metadata, "tokenizer.ggml.pre") in ("smollm", "starcoder", "refact"):
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    special = [tokens[i] for i, t in enumerate(types) if t in (3, 4)]  # control / user-defined
    tok.add_special_tokens(special)
    tok.save(str(out / "tokenizer.json"))

    def token(key: str):
        idx = _meta(metadata, key)
        return tokens[int(idx)] if idx is not None and 0 <= int(idx) < len(tokens) else None

    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token("tokenizer.ggml.bos_token_id"),
        "eos_token": token("tokenizer.ggml.eos_token_id"),
        "unk_token": token("tokenizer.ggml.unknown_token_id"),
        "pad_token": token("tokenizer.ggml.padding_token_id"),
        "add_bos_token": bool(_meta(metadata, "tokenizer.ggml.add_bos_token", False)),
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(_meta(metadata, "llama.context_length", 2048)),
        "chat_template": _meta(metadata, "tokenizer.chat_template"),
    }
    (out / "tokenizer_config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not None}, indent=2))


def convert(gguf: Path, out: Path) -> Path:
    """Write the mlx-lm folder for `gguf` into `out` (created; must not exist)."""
    import mlx.core as mx

    weights, metadata = mx.load(str(gguf), return_metadata=True)
    weights = {hf_name(k): v for k, v in weights.items()}
    out.mkdir(parents=True)
    config = build_config(metadata, weights)
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    build_tokenizer(metadata, out)
    (out / "SOURCE").write_text(f"{gguf}\n")
    return out


def cache_folder(gguf: Path, cache_dir: Path) -> Path:
    """Folder name keyed by the GGUF's name, size and mtime: a changed file converts again."""
    stat = gguf.stat()
    key = hashlib.sha1(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_dir / f"{gguf.stem}-{key}"


def ensure_converted(gguf: Path, cache_dir: Path) -> Path:
    """The converted folder for `gguf`, converting only when it is not in `cache_dir` yet.

    Conversion writes to a temporary sibling and renames it, so an interrupted or concurrent
    conversion never leaves a half-written folder that later loads would trust.
    """
    target = cache_folder(gguf, cache_dir)
    if (target / "config.json").is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=cache_dir))
    try:
        convert(gguf, tmp / "model")
        try:
            os.replace(tmp / "model", target)
        except OSError:
            if not (target / "config.json").is_file():  # somebody else won the race: fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
