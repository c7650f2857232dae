"""An offline text embedder for KNNFewShot: hashed word and character n-grams.

KNNFewShot needs a vectorizer; hub-hosted sentence encoders cannot be downloaded here, and
nearest neighbours over hashed n-grams (the "hashing trick", Weinberger et al. 2009) are a
real, deterministic lexical similarity that needs nothing but numpy.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

_WORD = re.compile(r"\w+")


def _bucket(token: str, dim: int) -> tuple[int, float]:
    digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    return value % dim, 1.0 if (value >> 63) & 1 else -1.0


class HashingEmbedder:
    """Callable `list[str] -> np.ndarray[n, dim]`, L2-normalised rows."""

    def __init__(self, dim: int = 512, char_ngrams: int = 3):
        self.dim = dim
        self.char_ngrams = char_ngrams

    def __call__(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            words = _WORD.findall(str(text).lower())
            grams = words + [f"{a}_{b}" for a, b in zip(words, words[1:])]
            n = self.char_ngrams
            grams += [w[j:j + n] for w in words if len(w) > n for j in range(len(w) - n + 1)]
            for g in grams:
                idx, sign = _bucket(g, self.dim)
                out[i, idx] += sign
            norm = np.linalg.norm(out[i])
            if norm > 0:
                out[i] /= norm
        return out
